output "profiles" {
  description = "The ComputeProfiles made (`kubectl get computeprofiles`)."
  value       = module.compute_server.profiles
}
