#!/usr/bin/env bash
# The demo on embedded defaults: a sample application with volume data is backed up, its namespace
# deleted, and restored; then every object and every byte is compared with what was there before
# (devstack/demo_check.py). Exits non-zero on any difference. Run by `make demo` after `make up`.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . .dev/env; set +a
k() { "$KUBECTL" "$@"; }
check() { .venv/bin/python -m devstack.demo_check "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ns=demo
# Backups, restores and their location live in the admin namespace: they outlive the application's.
admin=kube-system
location=demo-local
name="demo-$(date +%Y%m%d-%H%M%S)"
record=".dev/demo/$name.json"

if k get namespace "$ns" >/dev/null 2>&1; then
  step "Removing namespace $ns left by an earlier run"
  k delete namespace "$ns" --timeout=180s
fi

step "Deploying the demo application (namespace $ns)"
k apply -f examples/demo/app.yaml
check record "$ns" --out "$record"
k -n "$ns" get deploy,statefulset,svc,pvc

step "A BackupLocation on the local filesystem ($admin/$location)"
if ! k -n "$admin" get backuplocation "$location" >/dev/null 2>&1; then
  "$DAVIT" -n "$admin" location create "$location" --type local --path "$LOCAL_STORE"
fi
for _ in $(seq 1 100); do
  [ "$(k -n "$admin" get backuplocation "$location" -o jsonpath='{.status.phase}')" = Available ] && break
  sleep 0.1
done
"$DAVIT" -n "$admin" location get "$location"

step "Exec rules: a dump before the volumes are read, removed afterwards; checked after a restore"
k apply -f examples/demo/rules.yaml

step "davit backup create $name --namespaces $ns --pre-exec-rule demo-db-dump --post-exec-rule demo-db-dump-cleanup --wait"
"$DAVIT" -n "$admin" backup create "$name" --location "$location" --namespaces "$ns" \
  --pre-exec-rule demo-db-dump --post-exec-rule demo-db-dump-cleanup --wait
echo "the backup holds the dump the pre-exec rule wrote:"
"$DAVIT" -n "$admin" repo ls --location "$location" --backup "$name" --volume "$ns/data-db-0" dump.sql

step "Deleting namespace $ns: the application, its claims and their volumes"
k delete namespace "$ns" --timeout=180s
k get namespace "$ns" 2>&1 || true

step "davit restore create $name --from-backup $name --post-exec-rule demo-db-verify --wait"
"$DAVIT" -n "$admin" restore create "$name" --from-backup "$name" --location "$location" \
  --post-exec-rule demo-db-verify --wait

step "davit restore describe $name"
"$DAVIT" -n "$admin" restore describe "$name"

step "Comparing every object and every file with the record taken before the backup"
check compare "$ns" --before "$record" --backup "$admin/$name" --restore "$admin/$name"

cat <<TXT

Try '$DAVIT -n $admin backup describe $name', '$DAVIT -n $admin restore logs $name',
'$KUBECTL -n $ns get all -l davit.dev/restore=$name', or the metrics at $METRICS_URL.
Stop the stack with: make down
TXT
