variable "kubeconfig" {
  description = "Path of the kubeconfig of the local stack (`make up` writes target/local/kubeconfig)."
  type        = string

  validation {
    condition     = fileexists(var.kubeconfig)
    error_message = "kubeconfig must be the path of an existing file, such as target/local/kubeconfig after `make up`."
  }
}
