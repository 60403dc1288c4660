# The chart's main values (charts/compute-server/values.yaml), with the same defaults. The plain
# manifests (manifests/) are the chart rendered with create_namespace = true and
# keycloak.url = "https://keycloak.example.com"; this module with those inputs makes the same
# objects.

variable "namespace" {
  description = "Namespace of the roles, where ComputeServers are made and looked up."
  type        = string
  default     = "compute"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS label: lowercase letters, digits and '-', at most 63 characters, such as \"compute\"."
  }
}

variable "create_namespace" {
  description = "Create the namespace. false: it exists beforehand."
  type        = bool
  default     = true
}

variable "install_crds" {
  description = "Install the CRDs (ComputeServer, ComputeProfile, ComputeNode, ComputeSnapshot, ComputeQuota, ComputeUsage). false: they are managed elsewhere (`kubectl apply -f crds/`). Destroying them deletes every user's servers."
  type        = bool
  default     = true
}

variable "image" {
  description = "The one image of every role (`compute-server <role>`): repository and tag."
  type = object({
    repository  = optional(string, "computeserver/compute-server")
    tag         = optional(string, "0.1.0")
    pull_policy = optional(string, "IfNotPresent")
  })
  default = {}

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image.pull_policy)
    error_message = "image.pull_policy must be one of Always, IfNotPresent, Never."
  }
  validation {
    condition     = var.image.repository != "" && var.image.tag != ""
    error_message = "image.repository and image.tag must not be empty."
  }
}

variable "keycloak" {
  description = "Keycloak as the web front uses it: the base URL browsers and the web pods reach (required for the web role), the realm, the client and the realm role of compute-server admins."
  type = object({
    url        = optional(string, "")
    realm      = optional(string, "compute")
    client_id  = optional(string, "compute-server")
    admin_role = optional(string, "compute-admin")
  })
  default = {}

  validation {
    condition     = var.keycloak.url == "" || can(regex("^https?://[^/\\s]+(/[^\\s]*)?[^/\\s]$", var.keycloak.url))
    error_message = "keycloak.url must be an http(s) URL without a trailing slash, such as \"https://keycloak.example.com\"."
  }
  validation {
    condition     = var.keycloak.realm != "" && var.keycloak.client_id != ""
    error_message = "keycloak.realm and keycloak.client_id must not be empty."
  }
}

variable "roles" {
  description = "Which roles to run and how: agent (a DaemonSet on the nodes of node_selector, with the hosts' Docker socket at docker_socket), scheduler, web and bastion (Deployments of `replicas`; web.public_url is the address people open; bastion.external_address, host:port, is shown in SSH commands; a replaced bastion pod keeps open sessions for drain_seconds; each one's service: ClusterIP, NodePort with node_port, or LoadBalancer). Their ServiceAccounts, RBAC and Services come with them."
  type = object({
    agent = optional(object({
      enabled       = optional(bool, true)
      node_selector = optional(map(string), { "computeserver.io/agent" = "true" })
      docker_socket = optional(string, "/var/run/docker.sock")
    }), {})
    scheduler = optional(object({
      enabled  = optional(bool, true)
      replicas = optional(number, 2)
    }), {})
    web = optional(object({
      enabled    = optional(bool, true)
      replicas   = optional(number, 1)
      public_url = optional(string, "http://127.0.0.1:8080")
      service = optional(object({
        type      = optional(string, "ClusterIP")
        node_port = optional(number)
      }), {})
    }), {})
    bastion = optional(object({
      enabled          = optional(bool, true)
      replicas         = optional(number, 1)
      external_address = optional(string, "")
      drain_seconds    = optional(number, 600)
      service = optional(object({
        type      = optional(string, "ClusterIP")
        node_port = optional(number)
      }), {})
    }), {})
  })
  default = {}

  validation {
    condition = alltrue([
      for n in [var.roles.scheduler.replicas, var.roles.web.replicas, var.roles.bastion.replicas] :
      n >= 0 && floor(n) == n
    ])
    error_message = "roles.*.replicas must be whole numbers, 0 or more."
  }
  validation {
    condition     = alltrue([for r in ["web", "bastion"] : contains(["ClusterIP", "NodePort", "LoadBalancer"], var.roles[r].service.type)])
    error_message = "roles.web.service.type and roles.bastion.service.type must be ClusterIP, NodePort or LoadBalancer."
  }
  validation {
    condition     = alltrue([for r in ["web", "bastion"] : var.roles[r].service.node_port == null || (var.roles[r].service.node_port >= 1 && var.roles[r].service.node_port <= 65535)])
    error_message = "roles.*.service.node_port must be a port number (the cluster's NodePort range is 30000-32767 by default)."
  }
  validation {
    condition     = length(var.roles.agent.node_selector) > 0
    error_message = "roles.agent.node_selector must select some nodes, such as { \"computeserver.io/agent\" = \"true\" }: an empty one puts an agent with the Docker socket on every node."
  }
}

variable "log" {
  description = "Log format (text or json) and filter (RUST_LOG syntax) of every role."
  type = object({
    format = optional(string, "json")
    level  = optional(string, "info")
  })
  default = {}

  validation {
    condition     = contains(["text", "json"], var.log.format)
    error_message = "log.format must be \"text\" or \"json\"."
  }
}

variable "admission" {
  description = "The admission policies that keep people to their own ComputeServers (docs/admin-guide.md: \"Identity and access\"): enabled, the groups of compute-server admins besides system:masters (each also matched with username_prefix in front), the OIDC username prefix (the API server's OIDC authenticator puts it in front of user names and groups alike; it is removed before they are compared with spec.owner and spec.ownerGroups), and owner_label: the MutatingAdmissionPolicies that set the owner label and spec.ownerGroups of a server made with kubectl (need Kubernetes 1.36+; without them, people who make their own servers with kubectl write their groups in spec.ownerGroups themselves)."
  type = object({
    enabled         = optional(bool, true)
    admin_groups    = optional(list(string), ["compute-admins"])
    username_prefix = optional(string, "oidc:")
    owner_label     = optional(bool, true)
  })
  default = {}

  validation {
    condition     = alltrue([for g in var.admission.admin_groups : trimspace(g) != ""])
    error_message = "admission.admin_groups must not hold empty group names."
  }
}

variable "force_conflicts" {
  description = "Take back fields that another field manager (kubectl edit or patch, a controller) has changed since: apply puts the configuration back. false: such a conflict fails the apply, naming the other manager."
  type        = bool
  default     = true
}

variable "user_role" {
  description = "Create the ClusterRole compute-server-user for people (aggregated to the built-in edit role)."
  type        = bool
  default     = true
}

variable "profiles" {
  description = "ComputeProfiles to create (cluster-wide), by name: each value is a ComputeProfile spec as in `kubectl explain computeprofile.spec`, in its own camelCase (displayName, image, defaultResources, maxResources, ...). Their CRD must exist when they are planned: on a cluster without it, apply with install_crds first, then add profiles."
  type        = any
  default     = {}

  validation {
    condition     = can(keys(var.profiles)) && alltrue([for n in try(keys(var.profiles), []) : can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", n))])
    error_message = "profiles must be a map from profile names (lowercase DNS names such as \"debian\") to ComputeProfile specs."
  }
  validation {
    condition     = alltrue([for p in try(values(var.profiles), []) : can(p.image) || length(try(p.allowedImages, [])) > 0])
    error_message = "Each profile needs an image, or the images users may choose in allowedImages."
  }
}

variable "quotas" {
  description = "ComputeQuotas to create (cluster-wide), by name: budgets for Keycloak groups and people that the scheduler holds servers to. Each value is a ComputeQuota spec as in `kubectl explain computequota.spec`, in its own camelCase: subjects ([{ group = \"students\" }, { user = \"alice\" }]), perUser and total ({ cpu = \"4\", memory = \"32Gi\", gpus = 1, servers = 2, cpuHours = 500, gpuHours = 40 }) period (day, week or month) and whenSpent (Stop or KeepRunning). Their CRD must exist when they are planned: on a cluster without it, apply with install_crds first, then add quotas."
  type        = any
  default     = {}

  validation {
    condition     = can(keys(var.quotas)) && alltrue([for n in try(keys(var.quotas), []) : can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", n))])
    error_message = "quotas must be a map from quota names (lowercase DNS names such as \"students\") to ComputeQuota specs."
  }
  validation {
    condition     = alltrue([for q in try(values(var.quotas), []) : length(try(q.subjects, [])) > 0])
    error_message = "Each quota needs subjects: the Keycloak groups ({ group = \"students\" }) and people ({ user = \"alice\" }) it budgets."
  }
}

variable "network_policy" {
  description = "NetworkPolicies that let each role accept connections on the ports it serves only (web 8080, bastion 2222, metrics 8081), where the cluster's network plugin enforces them."
  type = object({
    enabled = optional(bool, true)
  })
  default = {}
}

variable "snapshots" {
  description = <<-EOT
    Where the agents keep servers' snapshots (docs/admin-guide.md, "Snapshots"): store is
    s3://BUCKET[/PREFIX] (any S3-compatible store), gs://BUCKET, az://CONTAINER or file:///PATH
    (empty: no snapshots); credentials_secret names a Secret whose keys become the agents'
    environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT, ...).
  EOT
  type = object({
    store              = optional(string, "")
    credentials_secret = optional(string, "")
  })
  default = {}
  validation {
    condition     = var.snapshots.store == "" || can(regex("^(s3|s3a|gs|az|azure|abfs|abfss|file)://.+", var.snapshots.store))
    error_message = "snapshots.store must be s3://BUCKET, gs://BUCKET, az://CONTAINER or file:///PATH."
  }
}
