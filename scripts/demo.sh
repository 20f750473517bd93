#!/usr/bin/env bash
# The demo on embedded defaults: a sample application backed up to a local-directory BackupLocation,
# shown with the davit CLI. Run by `make demo` after `make up`.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . .dev/env; set +a
k() { "$KUBECTL" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Deploying the demo application (namespace demo)"
k apply -f examples/demo/app.yaml
k -n demo rollout status statefulset/db --timeout=60s
k -n demo get deploy,statefulset,svc,pvc

step "A BackupLocation on the local filesystem"
"$DAVIT" -n demo location create local --type local --path "$LOCAL_STORE" 2>/dev/null \
  || echo "(location demo/local exists already)"
for _ in $(seq 1 100); do
  phase=$(k -n demo get backuplocation local -o jsonpath='{.status.phase}')
  [ -n "$phase" ] && break
  sleep 0.1
done
"$DAVIT" -n demo location get

name="demo-$(date +%Y%m%d-%H%M%S)"
step "davit backup create $name --wait"
"$DAVIT" -n demo backup create "$name" --location local --namespaces demo --wait

step "davit backup get"
"$DAVIT" -n demo backup get

step "davit backups list-remote --location local"
"$DAVIT" -n demo backups list-remote --location local

step "davit backup logs $name"
"$DAVIT" -n demo backup logs "$name"

cat <<TXT

The backup holds the application's resources and the database volume's data (VOLUMES 1/1), stored
deduplicated in $LOCAL_STORE/repo. Try
'$DAVIT -n demo backup describe $name', or the metrics at $METRICS_URL.
Stop the stack with: make down
TXT
