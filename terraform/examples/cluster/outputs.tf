output "objects" {
  description = "The objects this module made, as kind/namespace/name."
  value       = module.compute_server.objects
}
