variable "kubeconfig" {
  description = "Path of the cluster's admin kubeconfig (`make cluster` writes target/cluster/kubeconfig)."
  type        = string

  validation {
    condition     = fileexists(var.kubeconfig)
    error_message = "kubeconfig must be the path of an existing file, such as target/cluster/kubeconfig after `make cluster`."
  }
}

variable "keycloak_url" {
  description = "Keycloak's base URL, as browsers and the web pods reach it, such as https://keycloak.example.com."
  type        = string
}

variable "web_public_url" {
  description = "The address people open, such as https://compute.example.com (Keycloak's redirect goes there)."
  type        = string
}

variable "bastion_address" {
  description = "host:port people reach the bastion at, shown in the web front's SSH commands."
  type        = string
  default     = ""
}

variable "docker_socket" {
  description = "The Docker socket on each host that runs an agent."
  type        = string
  default     = "/var/run/docker.sock"
}

variable "web_node_port" {
  description = "Serve the web front on this port of every node (a NodePort Service); null: inside the cluster only."
  type        = number
  default     = null
}

variable "bastion_node_port" {
  description = "Serve the bastion on this port of every node (a NodePort Service); null: inside the cluster only."
  type        = number
  default     = null
}

variable "profiles" {
  description = "ComputeProfiles by name (see the module); only once the CRDs are served, i.e. from the second apply on."
  type        = any
  default     = {}
}

variable "quotas" {
  description = "ComputeQuotas by name (see the module); only once the CRDs are served, i.e. from the second apply on."
  type        = any
  default     = {}
}

variable "create_namespace" {
  description = "Create the namespace compute. false: it exists beforehand, with the web front's session key and the bastion's host key in it."
  type        = bool
  default     = false
}
