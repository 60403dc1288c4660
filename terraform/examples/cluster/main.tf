# compute-server on a cluster, all of it: the CRDs, every role with its RBAC and Services, the
# NetworkPolicies, the admission policies and the user role (what `helm install` makes). The
# namespace and the two keys plain objects cannot make are the admin's, made beforehand as with
# kubectl (docs/admin-guide.md, "Terraform"); profiles and quotas can be added once the CRDs are served (a
# second apply with var.profiles and var.quotas, or kubectl).
module "compute_server" {
  source = "../../modules/compute-server"

  create_namespace = var.create_namespace

  keycloak = { url = var.keycloak_url }
  roles = {
    agent = { docker_socket = var.docker_socket }
    web = {
      public_url = var.web_public_url
      service    = { type = var.web_node_port == null ? "ClusterIP" : "NodePort", node_port = var.web_node_port }
    }
    bastion = {
      external_address = var.bastion_address
      service          = { type = var.bastion_node_port == null ? "ClusterIP" : "NodePort", node_port = var.bastion_node_port }
    }
  }
  profiles = var.profiles
  quotas   = var.quotas
}
