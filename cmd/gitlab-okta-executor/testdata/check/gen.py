# Generates the broken-*.toml and lint-*.toml inputs of TestCheckGolden from
# one valid base: each file gets one key wrong. Run: python3 gen.py
# @KEYDIR@ is replaced by the test with a directory holding okta-key.pem
# (RSA, 0600) and okta-key-0644.pem (the same key, world-readable).
import collections

def base():
    s = collections.OrderedDict()
    s[""] = [("runner_id", '"ci-1"'), ("state_dir", '"/var/lib/gitlab-okta-executor"')]
    s["docker"] = [("default_image", '"debian:bookworm"')]
    s["okta"] = [("org_url", '"https://example.okta.com"'), ("client_id", '"0oa1"'),
                 ("private_key_file", '"@KEYDIR@/okta-key.pem"'), ("key_id", '"k1"')]
    s["gitlab"] = [("url", '"https://gitlab.example.com"'), ("audience", '"https://ci-1.example.com/gitlab-okta-executor"'),
                   ("id_token_variables", '["OKTA_EXECUTOR_ID_TOKEN"]')]
    s["policy"] = [("on_no_match", '"fail"')]
    s["[policy.rules]"] = [("name", '"read"'), ("require_id_token", "true"), ("scopes", '["artifacts:read"]')]
    s["policy.rules.bound_claims"] = [("project_path", '["platform/api"]')]
    return s

def render(s, extra=""):
    out = []
    for sec, kvs in s.items():
        if sec.startswith("["):
            out.append("[" + sec + "]")
        elif sec:
            out.append("[" + sec + "]")
        for k, v in kvs:
            out.append(f"{k} = {v}")
        out.append("")
    return "\n".join(out) + extra

def setkey(s, sec, key, val):
    kvs = s.setdefault(sec, [])
    for i, (k, _) in enumerate(kvs):
        if k == key:
            if val is None:
                del kvs[i]
            else:
                kvs[i] = (k, val)
            return
    if val is not None:
        kvs.append((key, val))

cases = [
    ("runner_id", "", "runner_id", '"CI Runner"'),
    ("state_dir", "", "state_dir", '"state"'),
    ("log_level", "", "log_level", '"loud"'),
    ("builds_dir", "", "builds_dir", '"/"'),
    ("cache_dir", "", "cache_dir", '"cache"'),
    ("reap_grace", "", "reap_grace", '"soon"'),
    ("unknown_key", "", "colour", '"blue"'),
    ("metrics_file", "", "metrics_file", '"/nonexistent/textfile_collector/gitlab-okta-executor.prom"'),
    ("metrics_file-relative", "", "metrics_file", '"gitlab-okta-executor.prom"'),
    ("docker-pull_policy", "docker", "pull_policy", '["sometimes"]'),
    ("docker-allowed_pull_policies", "docker", "allowed_pull_policies", '["maybe"]'),
    ("docker-allowed_images", "docker", "allowed_images", '["[debian"]'),
    ("docker-privileged", "docker", "privileged", "true"),
    ("docker-memory", "docker", "memory", '"lots"'),
    ("docker-cpus", "docker", "cpus", '"-1"'),
    ("docker-cap_add", "docker", "cap_add", '["ALL"]'),
    ("docker-volumes", "docker", "volumes", '["/a:/b:rx"]'),
    ("docker-devices", "docker", "devices", '["/tmp/x"]'),
    ("docker-runner_binary", "docker", "runner_binary", '"/nonexistent/gitlab-runner"'),
    ("docker-service_wait_timeout", "docker", "service_wait_timeout", '"-1s"'),
    ("okta-org_url", "okta", "org_url", '"http://example.okta.com"'),
    ("okta-issuer", "okta", "issuer", '"https://example.okta.com"'),
    ("okta-authorization_server_id", "okta", "authorization_server_id", '"aus/1"'),
    ("okta-client_id", "okta", "client_id", None),
    ("okta-private_key_file", "okta", "private_key_file", '"@KEYDIR@/missing.pem"'),
    ("okta-private_key_file-mode", "okta", "private_key_file", '"@KEYDIR@/okta-key-0644.pem"'),
    ("okta-key_id", "okta", "key_id", '""'),
    ("okta-key_algorithm", "okta", "key_algorithm", '"HS256"'),
    ("okta-key_algorithm-mismatch", "okta", "key_algorithm", '"ES256"'),
    ("okta-default_lifetime", "okta", "default_lifetime", '"1m"'),
    ("okta-refresh_margin", "okta", "refresh_margin", '"20m"'),
    ("okta-http_timeout", "okta", "http_timeout", '"-1s"'),
    ("okta-audit_log", "okta", "audit_log", '"audit.log"'),
    ("okta-delivery-token_file", "okta.delivery", "token_file", '"/token"'),
    ("okta-delivery-env_prefix", "okta.delivery", "env_prefix", '"okta"'),
    ("okta-dpop", "okta.dpop", "client_id", '"0oa_dpop"'),
    ("okta-apps-max_concurrent", "okta.apps", "max_concurrent", "5000"),
    ("okta-apps-name_prefix", "okta.apps", "name_prefix", '"jobs-"'),
    ("okta-rate_limit-share", "okta.rate_limit", "share", "1.5"),
    ("okta-rate_limit-max_in_flight", "okta.rate_limit", "max_in_flight", "100"),
    ("gitlab-url", "gitlab", "url", '"ftp://gitlab.example.com"'),
    ("gitlab-audience", "gitlab", "audience", None),
    ("gitlab-id_token_variables", "gitlab", "id_token_variables", "[]"),
    ("policy-on_no_match", "policy", "on_no_match", '"allow"'),
    ("rule-name", "[policy.rules]", "name", '""'),
    ("rule-scopes", "[policy.rules]", "scopes", "[]"),
    ("rule-scope-space", "[policy.rules]", "scopes", '["artifacts:read artifacts:write"]'),
    ("rule-lifetime", "[policy.rules]", "lifetime", '"48h"'),
    ("rule-authorization_server", "[policy.rules]", "authorization_server", '"aus 1"'),
    ("rule-mode", "[policy.rules]", "mode", '"magic"'),
    ("rule-mode-app", "[policy.rules]", "mode", '"app"'),
    ("rule-deliver", "[policy.rules]", "deliver", '"credentials"'),
    ("rule-require_id_token", "[policy.rules]", "require_id_token", '"yes"'),
    ("claim-unknown", "policy.rules.bound_claims", "branch", '["main"]'),
    ("claim-id", "policy.rules.bound_claims", "project_id", '["4*"]'),
    ("claim-bool", "policy.rules.bound_claims", "ref_protected", '["yes"]'),
    ("claim-glob", "policy.rules.bound_claims", "ref", '["[main"]'),
    ("claim-empty", "policy.rules.bound_claims", "ref", '[""]'),
    ("policy-on_excess_request", "policy", "on_excess_request", '"ignore"'),
    ("rule-on_excess_request", "[policy.rules]", "on_excess_request", '"drop"'),
    ("rule-steps", "[policy.rules]", "steps", '["get_source"]'),
    ("rule-steps-empty", "[policy.rules]", "steps", '[]'),
    ("rule-rotate", "[policy.rules]", "rotate", '"hourly"'),
]
for name, sec, key, val in cases:
    s = base()
    setkey(s, sec, key, val)
    open(f"broken-{name}.toml", "w").write(f"# {sec + '.' if sec else ''}{key} is wrong; the rest is valid.\n" + render(s))

# Named credentials: the base rule's grant as one credential.
def credbase():
    s = base()
    setkey(s, "[policy.rules]", "scopes", None)
    s["[policy.rules.credentials]"] = [("name", '"deploy"'), ("scopes", '["deploy:write"]')]
    return s

credcases = [
    ("credential-name", "name", '"has-dash"'),
    ("credential-scopes", "scopes", "[]"),
    ("credential-authorization_server", "authorization_server", '"aus 1"'),
    ("credential-lifetime", "lifetime", '"48h"'),
    ("credential-lifetime-margin", "lifetime", '"5m"'),
    ("credential-mode", "mode", '"magic"'),
    ("credential-deliver", "deliver", '"credentials"'),
    ("credential-steps", "steps", '["step_*_x", "cache"]'),
    ("credential-rotate", "rotate", '"daily"'),
]
for name, key, val in credcases:
    s = credbase()
    setkey(s, "[policy.rules.credentials]", key, val)
    open(f"broken-{name}.toml", "w").write(f"# [[policy.rules.credentials]].{key} is wrong; the rest is valid.\n" + render(s))
s = credbase(); setkey(s, "[policy.rules]", "scopes", '["artifacts:read"]')
open("broken-rule-scopes-and-credentials.toml", "w").write("# A rule with credentials has scopes of its own too.\n" + render(s))
s = credbase()
for k, v in [("mode", '"app"'), ("access_policy", '"00p1"'), ("deliver", '"credentials"'), ("rotate", '"each_step"')]:
    setkey(s, "[policy.rules.credentials]", k, v)
open("broken-credential-rotate-deliver.toml", "w").write("# rotate = \"each_step\" with app credentials the job mints its own tokens from.\n" + render(s))
s = credbase()
open("broken-credential-duplicate.toml", "w").write("# Two credentials whose names differ only in case.\n" + render(s) +
    '[[policy.rules.credentials]]\nname = "Deploy"\nscopes = ["deploy:read"]\n')
s = credbase()
open("valid-credentials.toml", "w").write("# A valid rule with two named credentials: check prints no problem and no warning.\n" + render(s) +
    '[[policy.rules.credentials]]\nname = "artifacts"\nauthorization_server = "aus_artifacts_1"\nscopes = ["artifacts:read"]\nlifetime = "10m"\nsteps = ["step_script"]\nrotate = "each_step"\n')
# [audit] cases: each a list of keys set together, the last one wrong.
audit_cases = [
    ("audit-hmac_key_file", [("audit", "hmac_key_file", '"@KEYDIR@/okta-key-0644.pem"')]),
    ("audit-chain_head", [("audit", "chain_head", '"chain-head.json"')]),
    ("audit-syslog-address", [("audit.syslog", "address", '"udp://siem.example.com:514"')]),
    ("audit-syslog-facility", [("audit.syslog", "address", '"tcp://siem.example.com:601"'), ("audit.syslog", "facility", '"kern"')]),
    ("audit-syslog-ca_file", [("audit.syslog", "address", '"tcp://siem.example.com:601"'), ("audit.syslog", "ca_file", '"@KEYDIR@/okta-key.pem"')]),
]
for name, keys in audit_cases:
    s = base()
    for sec, key, val in keys:
        setkey(s, sec, key, val)
    sec, key, _ = keys[-1]
    open(f"broken-{name}.toml", "w").write(f"# {sec}.{key} is wrong; the rest is valid.\n" + render(s))

s = base()
open("valid.toml", "w").write("# A valid settings file: check prints no problem and no warning.\n" + render(s))
open("broken-syntax.toml", "w").write("# Not TOML at all on line 3.\nrunner_id = \"ci-1\"\nstate_dir = /var/lib\n")
s = base(); s["policy.rules.bound_claims"] = []; s["[policy.rules]"] = [("name", '"read"'), ("scopes", '["artifacts:read"]')]
open("broken-no-rules.toml", "w").write("# [okta] without a single policy rule.\n" + render({k: v for k, v in s.items() if not k.startswith("[policy") and k != "policy.rules.bound_claims"}))

# Lint: valid files whose policy is probably not what was meant.
lint = {
"shadowed": '''[[policy.rules]]
name = "group"
require_id_token = true
scopes = ["artifacts:read"]
[policy.rules.bound_claims]
project_path = ["platform/**"]

[[policy.rules]]
name = "api"
require_id_token = true
scopes = ["artifacts:write"]
[policy.rules.bound_claims]
project_path = ["platform/api"]
ref = ["main"]
''',
"match-anything": '''[[policy.rules]]
name = "any-protected-ref"
require_id_token = true
scopes = ["artifacts:write"]
[policy.rules.bound_claims]
project_path = ["platform/api"]
ref = ["*"]
ref_protected = ["true"]

[[policy.rules]]
name = "both"
require_id_token = true
scopes = ["artifacts:read"]
[policy.rules.bound_claims]
project_path = ["platform/api"]
ref_protected = ["true", "false"]
''',
"old-runner": '''[[policy.rules]]
name = "by-path"
scopes = ["artifacts:read"]
[policy.rules.bound_claims]
project_path = ["platform/api"]
pipeline_id = ["12"]
''',
"unprotected-scope": '''[[policy.rules]]
name = "publish"
require_id_token = true
scopes = ["artifacts:write"]
[policy.rules.bound_claims]
project_path = ["platform/**"]
ref_protected = ["true"]

[[policy.rules]]
name = "everyone"
require_id_token = true
scopes = ["artifacts:read", "artifacts:write"]
[policy.rules.bound_claims]
project_path = ["platform/**"]
''',
"unbounded": '''[[policy.rules]]
name = "all"
scopes = ["artifacts:read"]
''',
"rotate-lifetime": '''[[policy.rules]]
name = "release"
require_id_token = true
rotate = "each_step"
[policy.rules.bound_claims]
project_path = ["platform/api"]
[[policy.rules.credentials]]
name = "deploy"
scopes = ["deploy:write"]
lifetime = "4h"
''',
"runner-steps": '''[[policy.rules]]
name = "build"
require_id_token = true
scopes = ["artifacts:read"]
steps = ["get_sources", "step_*", "upload_artifacts_*"]
[policy.rules.bound_claims]
project_path = ["platform/api"]
''',
}
for name, rules in lint.items():
    s = base()
    for k in ["policy", "[policy.rules]", "policy.rules.bound_claims"]:
        del s[k]
    open(f"lint-{name}.toml", "w").write(f"# Valid, with lint warnings ({name}).\n" + render(s) + "[policy]\n" + rules)
s = base(); setkey(s, "gitlab", "audience", '"https://gitlab.example.com"')
open("lint-audience.toml", "w").write("# Valid, but gitlab.audience is GitLab's own URL.\n" + render(s))
