# AgentIdP authorization: every API action is decided here.
#
# input.principal: kind (user | agent | federated | system), organization_id, scopes, status,
#                  platform, read_only (a federated principal whose partner allows no writes),
#                  act (a delegated token's chain: the ids of the agents acting for it, the
#                  latest first; empty when it acts itself)
# input.action:    the API action (list, create, suspend, ...)
# input.safe:      the request only reads (GET, HEAD, OPTIONS)
# input.scope:     the scope the action requires
# input.resource:  type and organization_id (null when the action targets a collection)
package agentidp.authz

import rego.v1

default allow := false

# Scopes only platform staff may hold, whatever a token claims.
platform_scopes := {"admin:orgs"}

allow if {
	active
	holds_scope
	within_organization
	may_write
}

active if input.principal.status == "active"

holds_scope if {
	input.scope in input.principal.scopes
	not platform_only
}

holds_scope if {
	input.scope in input.principal.scopes
	platform_only
	input.principal.platform
}

platform_only if input.scope in platform_scopes

within_organization if input.principal.platform

within_organization if {
	not input.principal.platform
	input.resource.organization_id == null
}

within_organization if {
	not input.principal.platform
	input.resource.organization_id == input.principal.organization_id
}

# A read-only principal (a partner's agent, by default) may only read.
may_write if not input.principal.read_only

may_write if input.safe

# Why a request was refused, for logs and tests.
reasons contains "inactive principal" if not active

reasons contains "missing scope" if not holds_scope

reasons contains "other organization" if not within_organization

reasons contains "read-only principal" if not may_write
