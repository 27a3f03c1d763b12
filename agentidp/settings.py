"""Settings for AgentIdP, read from the environment through django-environ.

Every option read here is documented in the README's configuration table.
"""

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import django_stubs_ext
import environ

# Lets admin and form classes be subscripted at runtime (ModelAdmin[Agent]) for type checking.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or (
    "insecure-development-key-do-not-use-in-production" if DEBUG else ""
)
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "django_celery_beat",
    "oauth2_provider",
    "django.contrib.postgres",
    "agentidp.apps.AgentIdPConfig",
    "organizations",
    "agents",
    "compliance",
    "credentials",
    "oidc",
    "did",
    "webhooks",
    "federation",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Django's SecurityMiddleware, first of all that answer (TLS: redirect, refusal, HSTS).
    "agentidp.middleware.TransportSecurityMiddleware",
    "agentidp.middleware.ErrorFormatMiddleware",
    # POST /oauth2/token on its lean path, ahead of the rest (oidc/lean.py); the full path below.
    "oidc.lean.LeanTokenMiddleware",
    # The admin's and the API docs' assets, served by the app itself (no CDN, no web server).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "agentidp.middleware.InputBoundaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "agentidp.tenancy.TenancyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "agentidp.urls"
LOGIN_URL = "/admin/login/"  # staff log in to the admin (a new member, after setting a password)
WSGI_APPLICATION = "agentidp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# Bounded waits (agentidp.deadlines): connecting (libpq's connect_timeout, whole seconds, at
# least 2), each statement and lock wait on the application's connection (server-side), and the
# same statement timeout plus a second enforced by the client for a server that cannot answer.
DB_CONNECT_TIMEOUT = env.int("DB_CONNECT_TIMEOUT", default=3)
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT", default=5000)
DB_LOCK_TIMEOUT_MS = env.int("DB_LOCK_TIMEOUT", default=3000)
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = env.int("DB_IDLE_IN_TRANSACTION_TIMEOUT", default=60000)


def _database(url: str, *, application: bool) -> dict[str, object]:
    config: dict[str, object] = env.db_url_config(url)
    # A unix-socket directory arrives percent-encoded in the host part.
    config["HOST"] = unquote(str(config.get("HOST") or ""))
    config["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    config["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
    options: dict[str, object] = {
        # Server-side parameter binding lets psycopg prepare a statement after its fifth run,
        # so the hot paths' handful of statements skip PostgreSQL's parse and plan each time.
        "server_side_binding": env.bool("DB_SERVER_SIDE_BINDING", default=True),
        "connect_timeout": max(DB_CONNECT_TIMEOUT, 2),
    }
    if application:
        # The owner's connection runs migrations, which may take longer than any request.
        config["ENGINE"] = "agentidp.db"
        options["options"] = (
            f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS} -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={DB_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        )
    config["OPTIONS"] = options
    return config


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


# What this checkout's databases on a shared server are named after (agentidp.devenv).
CHECKOUT_TAG = (
    env.str("AGENTIDP_CHECKOUT_TAG", default="")
    or (hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:8])
)
DATABASE_URL = env.str("DATABASE_URL", default="postgres://agentidp_app@127.0.0.1:5432/agentidp")
DATABASE_OWNER_URL = env.str(
    "DATABASE_OWNER_URL", default=_with_user(DATABASE_URL, "agentidp_owner")
)
DATABASES = {
    # The application role: no superuser, no BYPASSRLS, owns nothing. Every request runs here.
    "default": {**_database(DATABASE_URL, application=True), "TEST": {"MIRROR": "owner"}},
    # The owner role: owns the tables and runs the migrations (`migrate --database owner`).
    # (its engine is Django's own and the default's ours, so the test runner must be told that
    # the owner's test database waits for no other: the default is only its mirror)
    "owner": {
        **_database(DATABASE_OWNER_URL, application=False),
        # named after the checkout: two checkouts' suites on one server never meet
        "TEST": {"NAME": f"test_agentidp_{CHECKOUT_TAG}", "DEPENDENCIES": []},
    },
}
DATABASE_ROUTERS = ["agentidp.tenancy.MigrationRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "agentidp",
        # A Redis that does not answer is an error within two seconds, not a hung request.
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves the installed apps' static files straight from where they are installed,
# so no collectstatic step is needed; set STATIC_ROOT and run collectstatic to serve a copy.
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- TLS ----------------------------------------------------------------------------------------
# Enforced by default outside DEBUG (agentidp.middleware.TransportSecurityMiddleware, Django's
# SecurityMiddleware first in the stack): plain-HTTP reads redirect to HTTPS, plain-HTTP writes
# and OAuth calls are refused (a redirect would already have leaked the credential), HSTS on
# every HTTPS response, cookies Secure. ``X-Forwarded-Proto`` is believed only from
# AGENTIDP_TRUSTED_PROXIES (the TLS-terminating proxies' addresses). Switching enforcement off
# with DEBUG off is refused at start (system check agentidp.E010) unless
# AGENTIDP_ALLOW_PLAIN_HTTP=1 says so (the test suite and the benchmark on loopback).
TLS_ENFORCED = env.bool("AGENTIDP_TLS_ENFORCED", default=not DEBUG)
ALLOW_PLAIN_HTTP = env.bool("AGENTIDP_ALLOW_PLAIN_HTTP", default=False)
TRUSTED_PROXIES = env.list("AGENTIDP_TRUSTED_PROXIES", default=[])
SECURE_SSL_REDIRECT = TLS_ENFORCED
# Plain-HTTP reads are redirected to the issuer's https origin; with an http issuer there is
# none to send them to, and they are answered with what to do instead (agentidp.middleware).
_ISSUER_PARTS = urlsplit(env.str("AGENTIDP_ISSUER", default="http://localhost:8000"))
SECURE_SSL_HOST = _ISSUER_PARTS.netloc if _ISSUER_PARTS.scheme == "https" else None
# Probes and the Prometheus scrape stay reachable over plain HTTP inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if TLS_ENFORCED else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = TLS_ENFORCED
CSRF_COOKIE_SECURE = TLS_ENFORCED
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "agentidp.views.csrf_failure"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=262144)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["agentidp.authentication.PrincipalAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["agentidp.permissions.PolicyPermission"],
    "DEFAULT_PARSER_CLASSES": ["agentidp.boundary.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "agentidp.errors.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AgentIdP API",
    "DESCRIPTION": "Identity provider for AI agents: organizations, agents, audit.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc served from the app itself (drf-spectacular-sidecar): no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "agentidp.schema.problem_responses_hook",
        "oidc.schema.oauth_endpoints_hook",
        "did.schema.did_endpoints_hook",
        "agentidp.schema.text_rules_hook",
    ],
    "ENUM_NAME_OVERRIDES": {
        "AgentStatusEnum": "agents.choices.AgentStatus",
        "OrganizationStatusEnum": "organizations.choices.OrganizationStatus",
    },
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Nothing waits in the broker for long: retries of deliveries are scheduled in the database
# (due ones are picked by a beat task), so the longest countdown is a task's own short retry.
# A task not acknowledged within the visibility timeout is handed to another worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Workers and beat log through LOGGING above (its format, its redaction), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"

_KEY_PREPUBLISH_SECONDS = env.int("AGENTIDP_KEY_PREPUBLISH_SECONDS", default=3600)
_JWKS_MAX_AGE = env.int("AGENTIDP_JWKS_MAX_AGE", default=300)
if _KEY_PREPUBLISH_SECONDS <= 2 * _JWKS_MAX_AGE:
    # A relying party may hold a JWKS cached by us (up to JWKS_MAX_AGE) and then by itself
    # (up to the same): a next key must be published longer than both before it signs.
    raise environ.ImproperlyConfigured(
        "AGENTIDP_KEY_PREPUBLISH_SECONDS must exceed twice AGENTIDP_JWKS_MAX_AGE"
    )

AGENTIDP = {
    "ISSUER": env.str("AGENTIDP_ISSUER", default="http://localhost:8000"),
    "PLATFORM_DB_ROLE": env.str("AGENTIDP_PLATFORM_DB_ROLE", default="agentidp_platform"),
    "STRICT_TENANCY": env.bool("AGENTIDP_STRICT_TENANCY", default=DEBUG),
    "AGENT_METADATA_MAX_BYTES": env.int("AGENTIDP_AGENT_METADATA_MAX_BYTES", default=8192),
    # Secrets and key material: Vault (KV v2) when VAULT_ADDR is set, else the local store.
    "VAULT": {
        "ADDR": env.str("VAULT_ADDR", default=""),
        "TOKEN": env.str("VAULT_TOKEN", default=""),
        "ROLE_ID": env.str("VAULT_ROLE_ID", default=""),
        "SECRET_ID": env.str("VAULT_SECRET_ID", default=""),
        "MOUNT": env.str("VAULT_MOUNT", default="secret"),
        "PREFIX": env.str("VAULT_PREFIX", default="agentidp"),
        # Encryption at rest: the Transit engine's mount and the key wrapping data keys.
        "TRANSIT_MOUNT": env.str("VAULT_TRANSIT_MOUNT", default="transit"),
        "TRANSIT_KEY": env.str("VAULT_TRANSIT_KEY", default="agentidp-data"),
    },
    "ALLOW_LOCAL_SECRETS": env.bool("AGENTIDP_ALLOW_LOCAL_SECRETS", default=False),
    "LOCAL_SECRETS": {
        "PATH": env.str(
            "AGENTIDP_LOCAL_SECRETS_PATH", default=str(BASE_DIR / ".agentidp/secrets.enc")
        ),
        "KEY_PATH": env.str(
            "AGENTIDP_LOCAL_SECRETS_KEY_FILE", default=str(BASE_DIR / ".agentidp/secrets.key")
        ),
    },
    # Authorization policy: in-process Rego (regopy), or an OPA server when OPA_URL is set.
    "POLICY": {
        "PATH": env.str("AGENTIDP_POLICY_PATH", default=str(BASE_DIR / "policies" / "authz.rego")),
        "OPA_URL": env.str("OPA_URL", default=""),
    },
    # Access tokens: ES256 by default (RS256 and EdDSA selectable), lifetimes capped globally.
    # id_tokens and signed /agent-info answers use each client's registered algorithm.
    "SIGNING_ALGORITHM": env.str("AGENTIDP_SIGNING_ALGORITHM", default="ES256"),
    # Signing keys: a next key is published this long before it may start signing; relying
    # parties may cache the JWKS for JWKS_MAX_AGE, which must stay below it.
    "KEY_PREPUBLISH_SECONDS": _KEY_PREPUBLISH_SECONDS,
    "JWKS_MAX_AGE": _JWKS_MAX_AGE,
    # Token status lists (oidc.statuslists): how long a relying party may cache one (its ttl).
    "STATUS_LIST_TTL": env.int("AGENTIDP_STATUS_LIST_TTL", default=60),
    # Public DID documents: cached in Redis this long (and forgotten on any change).
    "DID_DOCUMENT_CACHE_TTL_SECONDS": env.int("DID_DOCUMENT_CACHE_TTL_SECONDS", default=300),
    # A rotated-out DID key stays in the agent's DID document this long (seconds).
    # Encryption at rest: an organization's data key is replaced (and its data rewrapped) after.
    "DATA_KEY_ROTATION_DAYS": env.int("AGENTIDP_DATA_KEY_ROTATION_DAYS", default=90),
    # The Prometheus alert rules the alerting control checks (monitoring/prometheus/alerts.yml).
    "ALERT_RULES": env.str(
        "AGENTIDP_ALERT_RULES", default=str(BASE_DIR / "monitoring" / "prometheus" / "alerts.yml")
    ),
    # Secrets rotation (compliance.rotation): what "nearing expiry" means, and key lifetimes.
    "EXPIRY_WARNING_DAYS": env.int("AGENTIDP_EXPIRY_WARNING_DAYS", default=14),
    "SIGNING_KEY_MAX_AGE_DAYS": env.int("AGENTIDP_SIGNING_KEY_MAX_AGE_DAYS", default=90),
    "DID_KEY_MAX_AGE_DAYS": env.int("AGENTIDP_DID_KEY_MAX_AGE_DAYS", default=365),
    # The copy of each organization's checkpoints outside the database keeps the first
    # checkpoint of each day for this many days, besides the newest (compliance.anchors).
    "AUDIT_ANCHOR_DAYS": env.int("AGENTIDP_AUDIT_ANCHOR_DAYS", default=400),
    "DB_STATEMENT_TIMEOUT_MS": DB_STATEMENT_TIMEOUT_MS,
    # GET /audit/verify per organization (DRF's rate syntax).
    "AUDIT_VERIFY_RATE": env.str("AGENTIDP_AUDIT_VERIFY_RATE", default="6/min"),
    # Outbox health: a pending delivery older than this is unhealthy.
    "OUTBOX_MAX_LAG_SECONDS": env.int("AGENTIDP_OUTBOX_MAX_LAG_SECONDS", default=900),
    "DID_KEY_RETIRED_SECONDS": env.int("AGENTIDP_DID_KEY_RETIRED_SECONDS", default=30 * 86400),
    "ACCESS_TOKEN_MAX_LIFETIME": env.int("AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME", default=3600),
    "TOKEN_LEEWAY_SECONDS": env.int("AGENTIDP_TOKEN_LEEWAY_SECONDS", default=30),
    # Wrong client credentials: after this many failures within the window, for one client_id
    # or from one address (an IPv6 /64), further wrong ones get 429; a right secret never does.
    "AUTH_FAILURE_LIMIT": env.int("AGENTIDP_AUTH_FAILURE_LIMIT", default=10),
    "AUTH_FAILURE_WINDOW_SECONDS": env.int("AGENTIDP_AUTH_FAILURE_WINDOW_SECONDS", default=300),
    # The token endpoint's per-process client cache (oidc/lean.py): entries, and their age limit.
    "CLIENT_CACHE_ENTRIES": env.int("AGENTIDP_CLIENT_CACHE_ENTRIES", default=10000),
    "CLIENT_CACHE_SECONDS": env.int("AGENTIDP_CLIENT_CACHE_SECONDS", default=300),
    # Outbound HTTP (agentidp/outbound.py): addresses or CIDRs exempt from the address, port
    # and scheme rules; the ports allowed otherwise; plain http only when explicitly allowed.
    "SSRF_ALLOWLIST": env.list("AGENTIDP_SSRF_ALLOWLIST", default=[]),
    # ports, or inclusive ranges such as 1024-65535; the ports of the deployment's own services
    # stay refused whatever this says (agentidp.outbound.service_ports)
    "SSRF_ALLOWED_PORTS": env.list("AGENTIDP_SSRF_ALLOWED_PORTS", default=["443", "80"]),
    "SSRF_RESOLVER": env.str("AGENTIDP_SSRF_RESOLVER", default="agentidp.outbound.system_resolve"),
    "WEBHOOK_ALLOW_HTTP": env.bool("AGENTIDP_WEBHOOK_ALLOW_HTTP", default=False),
    # Registered resources (oidc.resources): http identifiers on loopback, for development.
    "RESOURCE_ALLOW_LOOPBACK_HTTP": env.bool(
        "AGENTIDP_RESOURCE_ALLOW_LOOPBACK_HTTP", default=False
    ),
    # DPoP (oidc.dpop, RFC 9449): proofs must carry a server nonce (DPoP-Nonce), which limits
    # a proof made in advance on a stolen key to the nonce's life; and how old a proof may be.
    "DPOP_NONCE_REQUIRED": env.bool("AGENTIDP_DPOP_NONCE_REQUIRED", default=True),
    "DPOP_PROOF_MAX_AGE": env.int("AGENTIDP_DPOP_PROOF_MAX_AGE", default=300),
    # Webhook delivery: seconds between attempts (the last failure after the last entry is a
    # dead letter), +/- jitter as a fraction, and when a failing subscription is disabled.
    "WEBHOOK_RETRY_SCHEDULE": env.list(
        "AGENTIDP_WEBHOOK_RETRY_SCHEDULE",
        cast=float,
        default=[5, 300, 1800, 7200, 18000, 36000, 36000],
    ),
    "WEBHOOK_RETRY_JITTER": env.float("AGENTIDP_WEBHOOK_RETRY_JITTER", default=0.1),
    "WEBHOOK_DISABLE_AFTER_SECONDS": env.int(
        "AGENTIDP_WEBHOOK_DISABLE_AFTER_SECONDS", default=5 * 86400
    ),
    "WEBHOOK_CONNECT_TIMEOUT": env.float("AGENTIDP_WEBHOOK_CONNECT_TIMEOUT", default=3.0),
    "WEBHOOK_TIMEOUT": env.float("AGENTIDP_WEBHOOK_TIMEOUT", default=10.0),
    "WEBHOOK_MAX_RESPONSE_BYTES": env.int("AGENTIDP_WEBHOOK_MAX_RESPONSE_BYTES", default=65536),
    "WEBHOOK_SECRET_OVERLAP_SECONDS": env.int(
        "AGENTIDP_WEBHOOK_SECRET_OVERLAP_SECONDS", default=86400
    ),
    "WEBHOOK_BATCH": env.int("AGENTIDP_WEBHOOK_BATCH", default=200),
    "WEBHOOK_CONCURRENCY": env.int("AGENTIDP_WEBHOOK_CONCURRENCY", default=16),
    # Event streams, each on when its address is set.
    "KAFKA_BROKERS": env.str("KAFKA_BROKERS", default=""),
    "KAFKA_TOPIC": env.str("KAFKA_TOPIC", default="agentidp.events"),
    "KAFKA_CONFIG": env.dict("KAFKA_CONFIG", default={}),
    "KAFKA_TIMEOUT_SECONDS": env.float("KAFKA_TIMEOUT_SECONDS", default=10.0),
    "NATS_URL": env.str("NATS_URL", default=""),
    "NATS_STREAM": env.str("NATS_STREAM", default="AGENTIDP"),
    "NATS_TIMEOUT_SECONDS": env.float("NATS_TIMEOUT_SECONDS", default=5.0),
    # Federation (federation/): partners' JWKS cached in Redis this long, refetched for an
    # unknown kid at most once per partner per interval; clock leeway on their tokens (at most
    # 300 s); the lifetime of a token exchanged for a partner's; bounds on what is fetched.
    "FEDERATION_JWKS_CACHE_TTL_SECONDS": env.int("FEDERATION_JWKS_CACHE_TTL_SECONDS", default=300),
    "FEDERATION_JWKS_REFETCH_INTERVAL_SECONDS": env.int(
        "FEDERATION_JWKS_REFETCH_INTERVAL_SECONDS", default=30
    ),
    "FEDERATION_LEEWAY_SECONDS": env.int("FEDERATION_LEEWAY_SECONDS", default=30),
    "FEDERATION_TOKEN_LIFETIME_SECONDS": env.int("FEDERATION_TOKEN_LIFETIME_SECONDS", default=300),
    "FEDERATION_FETCH_TIMEOUT_SECONDS": env.float("FEDERATION_FETCH_TIMEOUT_SECONDS", default=5.0),
    "FEDERATION_MAX_DOCUMENT_BYTES": env.int("FEDERATION_MAX_DOCUMENT_BYTES", default=262144),
    "FEDERATION_MAX_TOKEN_BYTES": env.int("FEDERATION_MAX_TOKEN_BYTES", default=16384),
    # Tried in order by the tenancy middleware; the first that returns a principal wins.
    "PRINCIPAL_RESOLVERS": [
        "oidc.principals.bearer_token_principal",
        "organizations.principals.staff_session_principal",
    ],
}

# django-oauth-toolkit: swapped models carry organization_id; extended through its validator
# and token generator hooks only.
OAUTH2_PROVIDER_APPLICATION_MODEL = "credentials.Client"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oidc.AccessToken"  # noqa: S105 - a model label
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oidc.RefreshToken"  # noqa: S105 - a model label
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oidc.IDToken"  # noqa: S105 - a model label
OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "oidc.validators.AgentRequestValidator",
    # oauthlib's server for client_credentials only (any other grant is unsupported_grant_type),
    # with each organization's token lifetime.
    "OAUTH2_SERVER_CLASS": "oidc.server.AgentTokenServer",
    "ACCESS_TOKEN_GENERATOR": "oidc.tokens.access_token_generate",
    # RFC 9700 4.14: store only each token's checksum, never the bearer token itself.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    # The scopes agents may hold come from organizations.choices.Scope, the one list of names.
    "SCOPES_BACKEND_CLASS": "credentials.scopes.AgentScopes",
    "ALLOWED_GRANT_TYPES": ["client_credentials"],
    "PKCE_REQUIRED": False,
    "OIDC_ENABLED": False,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # Admins that go through our services (DOT's would revoke a JWT by deleting its row only).
    "APPLICATION_ADMIN_CLASS": "credentials.admin.ClientAdmin",
    "ACCESS_TOKEN_ADMIN_CLASS": "oidc.admin.AccessTokenAdmin",
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("AGENTIDP_LOG_FORMAT", default="plain")
# Routine work (beat's ticks, each task received and done) is DEBUG: an idle deployment says
# next to nothing at INFO, and failures are still WARNING or ERROR.
_ROUTINE_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "agentidp.logs.JSONFormatter"},
    },
    # no credential in any line (agentidp.logs), whichever logger wrote it
    "filters": {
        "redact": {"()": "agentidp.logs.RedactCredentials"},
        "probes": {"()": "agentidp.logs.ProbesAtDebug"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own handlers (the development server's access log among them) replaced by
        # ours, so their lines are redacted too
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.server": {
            "handlers": ["console"],
            "level": LOG_LEVEL,
            "propagate": False,
            "filters": ["probes"],
        },
        "celery.beat": {"level": _ROUTINE_LEVEL},
        "celery.app.trace": {"level": _ROUTINE_LEVEL},
        "celery.worker.strategy": {"level": _ROUTINE_LEVEL},
    },
}
