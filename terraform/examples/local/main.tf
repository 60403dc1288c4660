# The local stack's policy as code: `make up` has installed compute-server (CRDs, roles, admission
# policy), so this applies only ComputeProfiles through the module, and `destroy` removes them and
# nothing else.
module "compute_server" {
  source = "../../modules/compute-server"

  install_crds     = false
  create_namespace = false
  user_role        = false
  admission        = { enabled = false }
  roles = {
    agent     = { enabled = false }
    scheduler = { enabled = false }
    web       = { enabled = false }
    bastion   = { enabled = false }
  }

  profiles = {
    terraform-example = {
      displayName       = "Terraform example (busybox)"
      description       = "Made by terraform/examples/local: a busybox shell, changed by a reviewed apply."
      image             = "computeserver/busybox:local"
      command           = ["sleep", "infinity"]
      defaultResources  = { cpu = "250m", memory = "64Mi" }
      maxResources      = { cpu = "1", memory = "256Mi" }
      maxServersPerUser = 2
      allowedGroups     = ["staff"]
      lifecycle         = { idleStopAfter = "2h", maxLifetime = "7d" }
    }
  }
}
