output "namespace" {
  description = "The namespace of the roles and of the ComputeServers."
  value       = var.namespace
}

output "profiles" {
  description = "Names of the ComputeProfiles this module made."
  value       = sort(keys(kubernetes_manifest.profile))
}

output "quotas" {
  description = "Names of the ComputeQuotas this module made."
  value       = sort(keys(kubernetes_manifest.quota))
}

output "objects" {
  description = "Every other object this module made, as kind/namespace/name (namespace empty for cluster-wide ones)."
  value = sort(concat(
    [for k, o in kubernetes_manifest.crd : "CustomResourceDefinition//${o.manifest.metadata.name}"],
    [for o in kubernetes_manifest.namespace : "Namespace//${o.manifest.metadata.name}"],
    keys(kubernetes_manifest.object),
  ))
}

output "service_accounts" {
  description = "The ServiceAccount of each role that runs, by role (what the admission policy trusts)."
  value = {
    for role in ["agent", "scheduler", "web", "bastion"] : role => "compute-server-${role}"
    if var.roles[role].enabled
  }
}
