"""The secrets-rotation job: finds what nears expiry, rotates what is due, renews the Vault
lease, and records it all as one ``secrets-rotation`` run.

* Client secrets expiring within ``EXPIRY_WARNING_DAYS``, counted per organization (the
  ``agentidp_credentials_expiring_soon_total`` metric reads the latest run); secrets past
  their expiry or their rotation's grace revoked (``credential.revoked``, reason
  ``expired``), so the rotation control counts only what the job failed to fix.
* Signing keys: a current key older than ``SIGNING_KEY_MAX_AGE_DAYS`` is rotated (the usual
  pre-published next key takes over, ``oidc.services.signing_key_rotate``); one within the
  warning window is reported.
* Custodial DID keys older than ``DID_KEY_MAX_AGE_DAYS`` less the warning window, per
  organization (rotating an agent's DID key changes what verifiers pin, so it is reported for
  the organization to rotate, not rotated behind its back).
* The secret store's login lease: renewed when renewable.

It crosses organizations through the platform context (``beat:secrets-rotation``).
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, QuerySet
from django.utils import timezone

from agentidp.errors import JSONValue
from agentidp.principals import Principal
from agentidp.secrets import secret_store
from agentidp.tenancy import platform_context
from compliance.jobs import job_recorded
from credentials.models import ClientSecret
from credentials.services import credentials_expired_revoke
from did.choices import DidKeyStatus
from did.models import AgentDidKey
from oidc.choices import KeyStatus
from oidc.models import SigningKey
from oidc.services import RotationRefused, signing_key_rotate

REASON = "beat:secrets-rotation"
JOB = "secrets-rotation"


def _per_organization(rows: QuerySet[ClientSecret] | QuerySet[AgentDidKey]) -> dict[str, JSONValue]:
    """``{organization id: count}`` of the rows."""
    counted = rows.values_list("organization_id").annotate(n=Count("id"))
    return {str(organization): int(n) for organization, n in counted}


def secrets_rotation_run() -> dict[str, JSONValue]:
    """One recorded run; returns its detail."""
    config = settings.AGENTIDP
    now = timezone.now()
    warning = timedelta(days=int(config["EXPIRY_WARNING_DAYS"]))
    signing_age = timedelta(days=int(config["SIGNING_KEY_MAX_AGE_DAYS"]))
    did_age = timedelta(days=int(config["DID_KEY_MAX_AGE_DAYS"]))
    actor = Principal.system(REASON)
    with job_recorded(JOB) as run, platform_context(reason=REASON, actor=actor):
        expiring = ClientSecret.objects.filter(
            revoked_at=None, expires_at__gt=now, expires_at__lte=now + warning
        )
        run.detail["credentials_expiring"] = _per_organization(expiring)
        run.detail["credentials_expired_revoked"] = credentials_expired_revoke(actor=actor)
        run.detail["credentials_expired_unrevoked"] = ClientSecret.objects.filter(
            revoked_at=None, expires_at__lte=now
        ).count()
        current = list(SigningKey.objects.filter(status=KeyStatus.CURRENT))
        due = [k for k in current if k.activated_at and k.activated_at <= now - signing_age]
        nearing = [
            k.kid
            for k in current
            if k.activated_at and now - signing_age < k.activated_at <= now - signing_age + warning
        ]
        rotated: dict[str, JSONValue] = {}
        if due:
            try:
                rotation = signing_key_rotate(
                    actor=actor, algorithms=sorted({k.algorithm for k in due})
                )
                rotated = {name: key.kid for name, key in rotation.activated.items()}
            except RotationRefused as refused:
                run.detail["signing_rotation_refused"] = refused.detail
                run.failed = True
        run.detail["signing_keys_rotated"] = rotated
        run.detail["signing_keys_nearing_expiry"] = list[JSONValue](nearing)
        old_did_keys = AgentDidKey.objects.filter(
            status=DidKeyStatus.ACTIVE, custodial=True, created_at__lte=now - did_age + warning
        )
        run.detail["did_keys_due"] = _per_organization(old_did_keys)
        lease: dict[str, JSONValue] = dict(secret_store().token_renew())
        run.detail["secret_store_lease"] = lease
        return dict(run.detail)
