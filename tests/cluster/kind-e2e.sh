#!/usr/bin/env bash
# End to end on a real cluster: kind, the image built from this tree, the chart with its
# try-out NATS, object store and example MailServer; one message in over SMTP, seen in the
# queue with `kubectl empath`; a field added to the spec and removed again leaves the
# Deployments (server-side apply prunes it); KEDA installed afterwards takes over from the
# HPA, and the HPA comes back when KEDA cannot read the backlog. Not run in CI (there is no
# Docker engine there).
#
# Needs: docker, kind, helm, kubectl, network access to KEDA's chart repository, and
# `make sync` done (for kubectl-empath).
# Usage: tests/cluster/kind-e2e.sh            (KEEP=1 keeps the cluster afterwards)
set -euo pipefail

cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-empath-e2e}
NAMESPACE=mail
IMAGE=empath:e2e
export PATH="$PWD/.venv/bin:$PATH"   # kubectl-empath, so that `kubectl empath` finds it

for tool in docker kind helm kubectl kubectl-empath; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

cleanup() {
    [[ -n "${FORWARD:-}" ]] && kill "$FORWARD" 2>/dev/null || true
    if [[ "${KEEP:-0}" != 1 ]]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

helm install empath charts/empath --namespace "$NAMESPACE" --create-namespace \
    --set image.repository=empath --set image.tag=e2e --set image.pullPolicy=Never \
    --set tryout.nats.enabled=true --set tryout.objectStore.enabled=true \
    --set tryout.mailserver.enabled=true --wait --timeout 5m

kubectl -n "$NAMESPACE" wait mailserver/example --for=condition=Ready --timeout=5m
kubectl -n "$NAMESPACE" get mailserver example
kubectl -n "$NAMESPACE" get deployments,services,pdb,hpa

kubectl -n "$NAMESPACE" port-forward service/example-smtp 2525:25 >/dev/null &
FORWARD=$!
sleep 3

# Freeze delivery first: the example relays for example.com, whose MX is not reachable from
# kind; a frozen queue keeps the message where `queue list` shows it.
kubectl empath -n "$NAMESPACE" --mailserver example queue freeze
python3 - <<'PY'
import smtplib
with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as smtp:
    print(smtp.ehlo("e2e.test"))
    refused = smtp.sendmail("e2e@sender.test", ["someone@example.com"],
                            b"Subject: kind e2e\r\n\r\nhello from the end-to-end script\r\n")
    assert not refused, refused
PY
sleep 2
kubectl empath -n "$NAMESPACE" --mailserver example queue list
kubectl empath -n "$NAMESPACE" --mailserver example -o json queue list \
    | python3 -c 'import json,sys; items=json.load(sys.stdin)["items"]; assert len(items)==1, items; print("queued:", items[0]["id"])'

# A spec change rolls the pods; the status follows.
kubectl -n "$NAMESPACE" patch mailserver example --type merge \
    -p '{"spec":{"limits":{"maxMessageSize":10485760}}}'
kubectl -n "$NAMESPACE" rollout status deployment/example-ingress --timeout=3m
kubectl -n "$NAMESPACE" wait mailserver/example --for=condition=Ready --timeout=3m

# until SECONDS COMMAND...: run COMMAND until it succeeds, for at most SECONDS.
until_ok() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        (( SECONDS < deadline )) || { echo "timed out: $*" >&2; return 1; }
        sleep 2
    done
}
node_selector() {
    kubectl -n "$NAMESPACE" get deployment example-spool \
        -o jsonpath='{.spec.template.spec.nodeSelector.kubernetes\.io/os}'
}
node_selector_is() { test "$(node_selector)" = "$1"; }

# A field added to the spec reaches the pods; removed, it leaves them (not merely unset in
# the MailServer while the Deployment keeps it).
kubectl -n "$NAMESPACE" patch mailserver example --type merge \
    -p '{"spec":{"pod":{"nodeSelector":{"kubernetes.io/os":"linux"}}}}'
until_ok 120 node_selector_is linux
kubectl -n "$NAMESPACE" patch mailserver example --type json \
    -p '[{"op":"remove","path":"/spec/pod/nodeSelector"}]'
until_ok 120 node_selector_is ""
kubectl -n "$NAMESPACE" rollout status deployment/example-spool --timeout=3m
kubectl -n "$NAMESPACE" get deployment example-spool -o json \
    | python3 -c 'import json,sys; pod=json.load(sys.stdin)["spec"]["template"]["spec"]; assert "nodeSelector" not in pod, pod["nodeSelector"]'

# KEDA installed after Empath: the next reconcile replaces the HPA with a ScaledObject (the
# HPA goes first: KEDA's webhook refuses a ScaledObject for a Deployment an HPA scales).
helm repo add kedacore https://kedacore.github.io/charts >/dev/null
helm install keda kedacore/keda --namespace keda --create-namespace --wait --timeout 5m
kubectl -n "$NAMESPACE" patch mailserver example --type merge \
    -p '{"spec":{"autoscaling":{"maxReplicas":5}}}'
kubectl -n "$NAMESPACE" wait mailserver/example --for=jsonpath='{.status.autoscaler}'=keda \
    --timeout=3m
kubectl -n "$NAMESPACE" get scaledobject example-delivery
until_ok 60 bash -c "! kubectl -n $NAMESPACE get hpa example-delivery >/dev/null 2>&1"
kubectl -n "$NAMESPACE" wait mailserver/example --for=condition=Degraded=False --timeout=3m

# Back to the HPA: the NATS URL from a Secret and no monitoring endpoint, so KEDA cannot
# read the backlog; the ScaledObject goes first, and a Warning says why.
url=$(kubectl -n "$NAMESPACE" get mailserver example -o jsonpath='{.spec.nats.url}')
kubectl -n "$NAMESPACE" create secret generic example-nats-url --from-literal=url="$url"
kubectl -n "$NAMESPACE" patch mailserver example --type merge \
    -p '{"spec":{"nats":{"url":null,"urlSecret":{"name":"example-nats-url"}}}}'
kubectl -n "$NAMESPACE" wait mailserver/example --for=jsonpath='{.status.autoscaler}'=hpa \
    --timeout=3m
kubectl -n "$NAMESPACE" get hpa example-delivery
until_ok 60 bash -c "! kubectl -n $NAMESPACE get scaledobject example-delivery >/dev/null 2>&1"
kubectl -n "$NAMESPACE" get events --field-selector reason=AutoscalerFallback | grep -q Warning
kubectl -n "$NAMESPACE" wait mailserver/example --for=condition=Ready --timeout=5m
echo "end to end: ok"
