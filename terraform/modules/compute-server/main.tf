# compute-server on a cluster: the objects of the Helm chart (charts/compute-server), read from
# templates/ (the chart rendered as manifests/ holds it, with the values below put in), and the
# ComputeProfiles and ComputeQuotas. Every object is applied server-side by the Kubernetes provider's
# kubernetes_manifest, so `plan` shows field-level changes and the API server validates them.
#
# templates/ follows the chart: after a change to charts/compute-server/templates, render it
# (`bash tests/support/manifests.sh render`) and carry the change over; tests/terraform.rs fails
# when the module's objects and manifests/ differ in kind or name.

locals {
  app_version   = "0.1.0"
  running_roles = [for r in ["agent", "scheduler", "web", "bastion"] : r if var.roles[r].enabled]

  template_vars = {
    namespace            = var.namespace
    app_version          = local.app_version
    image                = "${var.image.repository}:${var.image.tag}"
    image_pull_policy    = var.image.pull_policy
    oidc_issuer          = var.keycloak.url == "" ? "" : "${var.keycloak.url}/realms/${var.keycloak.realm}"
    keycloak_client_id   = var.keycloak.client_id
    keycloak_admin_role  = var.keycloak.admin_role
    log_format           = var.log.format
    log_level            = var.log.level
    agent_node_selector  = var.roles.agent.node_selector
    scheduler_replicas   = var.roles.scheduler.replicas
    web_replicas         = var.roles.web.replicas
    web_public_url       = var.roles.web.public_url
    bastion_replicas     = var.roles.bastion.replicas
    agent_docker_socket  = var.roles.agent.docker_socket
    web_service          = var.roles.web.service
    bastion_service      = var.roles.bastion.service
    bastion_address      = var.roles.bastion.external_address
    bastion_drain        = var.roles.bastion.drain_seconds
    network_policy_roles = local.running_roles
    admin_groups = distinct(concat(
      ["system:masters"],
      flatten([for g in var.admission.admin_groups : [g, "${var.admission.username_prefix}${g}"]]),
    ))
    username_prefix             = var.admission.username_prefix
    mutating                    = var.admission.owner_label
    snapshot_store              = var.snapshots.store
    snapshot_credentials_secret = var.snapshots.credentials_secret
  }

  # Which template files to apply (templates/NAME.yaml.tftpl).
  parts = concat(
    var.roles.agent.enabled ? ["agent"] : [],
    var.roles.scheduler.enabled ? ["scheduler"] : [],
    var.roles.web.enabled ? ["web"] : [],
    var.roles.bastion.enabled ? ["bastion"] : [],
    var.user_role ? ["user-role"] : [],
    var.admission.enabled ? ["admission"] : [],
    var.network_policy.enabled && length(local.running_roles) > 0 ? ["networkpolicy"] : [],
  )

  documents = flatten([
    for part in local.parts : [
      for doc in split("\n---\n", templatefile("${path.module}/templates/${part}.yaml.tftpl", local.template_vars)) :
      yamldecode(doc)
    ]
  ])

  # Keyed by kind/namespace/name, which stays the same across applies (a key is an object's address).
  objects = {
    for o in local.documents : "${o.kind}/${try(o.metadata.namespace, "")}/${o.metadata.name}" => o
    if var.admission.owner_label || !startswith(o.kind, "MutatingAdmissionPolicy")
  }

  crds = {
    for f in fileset("${path.module}/crds", "*.yaml") : trimsuffix(f, ".yaml") => yamldecode(file("${path.module}/crds/${f}"))
    if var.install_crds
  }
}

resource "kubernetes_manifest" "crd" {
  for_each = local.crds

  manifest = each.value

  field_manager {
    name            = "opentofu"
    force_conflicts = var.force_conflicts
  }
}

resource "kubernetes_manifest" "namespace" {
  count = var.create_namespace ? 1 : 0

  manifest = yamldecode(templatefile("${path.module}/templates/namespace.yaml.tftpl", local.template_vars))

  field_manager {
    name            = "opentofu"
    force_conflicts = var.force_conflicts
  }
}

resource "kubernetes_manifest" "object" {
  for_each = local.objects

  manifest = each.value

  field_manager {
    name            = "opentofu"
    force_conflicts = var.force_conflicts
  }

  depends_on = [kubernetes_manifest.crd, kubernetes_manifest.namespace]
}

resource "kubernetes_manifest" "profile" {
  for_each = var.profiles

  manifest = {
    apiVersion = "computeserver.io/v1alpha1"
    kind       = "ComputeProfile"
    metadata = {
      name = each.key
      labels = {
        "app.kubernetes.io/name"       = "compute-server"
        "app.kubernetes.io/managed-by" = "OpenTofu"
      }
    }
    spec = each.value
  }

  field_manager {
    name            = "opentofu"
    force_conflicts = var.force_conflicts
  }

  depends_on = [kubernetes_manifest.crd]
}

resource "kubernetes_manifest" "quota" {
  for_each = var.quotas

  manifest = {
    apiVersion = "computeserver.io/v1alpha1"
    kind       = "ComputeQuota"
    metadata = {
      name = each.key
      labels = {
        "app.kubernetes.io/name"       = "compute-server"
        "app.kubernetes.io/managed-by" = "OpenTofu"
      }
    }
    spec = each.value
  }

  field_manager {
    name            = "opentofu"
    force_conflicts = var.force_conflicts
  }

  depends_on = [kubernetes_manifest.crd]
}
