#!/bin/sh
# Start the image, wait for /readyz, exercise the health, catalogue, predict and score routes, stop it.
# Usage: scripts/image-test.sh ENGINE IMAGE [PORT]
set -eu
engine=$1
image=$2
port=${3:-8000}
name=stevedore-image-test-$$
url=http://127.0.0.1:$port

"$engine" run --detach --name "$name" --publish "127.0.0.1:$port:8000" "$image" >/dev/null
trap '"$engine" rm --force "$name" >/dev/null 2>&1' EXIT

ready=no
for _ in $(seq 120); do
    if curl --silent --fail "$url/readyz" >/dev/null 2>&1; then ready=yes; break; fi
    sleep 1
done
if [ "$ready" != yes ]; then
    echo "not ready after 120 s:" >&2
    "$engine" logs "$name" >&2
    exit 1
fi

check() {  # check WHAT EXPECTED CURL-ARGS...
    what=$1 expected=$2
    shift 2
    answer=$(curl --silent --show-error --fail "$@")
    case "$answer" in
        *"$expected"*) echo "ok   $what" ;;
        *) echo "FAIL $what: expected $expected in $answer" >&2; exit 1 ;;
    esac
}
check livez '"live"' "$url/livez"
check healthz '"status":"ok"' "$url/healthz"
check catalogue '"name":"iris"' "$url/models"
check predict '"predictions":[0]' -H 'Content-Type: application/json' -d '[[5.1, 3.5, 1.4, 0.2]]' "$url/models/iris/predict"
check score '"score":1.0' -H 'Content-Type: application/json' -d '[{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}]' "$url/models/iris/score"
check score-fixture '"score":' "$url/models/iris/score"
check v2-infer '"data":[0]' -d '{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}' "$url/v2/models/iris/infer"
echo "image $image passed"
