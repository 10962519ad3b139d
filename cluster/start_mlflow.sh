#!/usr/bin/env bash
# Starts the study's MLflow server on the Ray head node (the launcher configs' last head start
# command). The study driver runs on the head and is the only MLflow writer, so the server
# listens on the head's 127.0.0.1:5000 only: `ray attach CONFIG -p 5000` forwards it to
# http://localhost:5000 on your machine, and nobody else reaches it.
#
#   cluster/start_mlflow.sh [--artifacts URI]
#
# Runs go to $MLFLOW_BACKEND_STORE_URI when it is set, else to sqlite in ~/mlflow/mlflow.db.
# For a database, write MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST/mlflow into
# ~/.pagmfr/mlflow.env on the head (chmod 600): the password stays out of command lines (ps)
# and config files. Artifacts go to URI (e.g. s3://BUCKET/pagmfr/mlflow-artifacts), else to
# ~/mlflow/artifacts. A server this script started before is stopped first; the script waits
# until the new one answers, so `ray up` fails when MLflow cannot start (see ~/mlflow/server.log).
set -euo pipefail

artifacts=""
case "${1:-}" in
    --artifacts) artifacts="$2" ;;
    "") ;;
    *) echo "usage: $0 [--artifacts URI]" >&2; exit 2 ;;
esac

folder="$HOME/mlflow"
mkdir -p "$folder"
if [[ -f ~/.pagmfr/mlflow.env ]]; then
    set -a
    # shellcheck source=/dev/null
    source ~/.pagmfr/mlflow.env
    set +a
fi
export MLFLOW_BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$folder/mlflow.db}"
export MLFLOW_ARTIFACTS_DESTINATION="${artifacts:-${MLFLOW_ARTIFACTS_DESTINATION:-$folder/artifacts}}"
# Tracking only: MLflow's job runner (its GenAI jobs, seven processes) is not used by a study.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

if [[ -f "$folder/server.pid" ]]; then
    kill -- "-$(cat "$folder/server.pid")" 2>/dev/null || true  # its whole process group
    rm -f "$folder/server.pid"
fi
# Its own session (setsid), so the launcher's SSH session ending does not end it, and the next
# start stops the server with its workers. One worker: the study driver is the only writer.
setsid mlflow server --host 127.0.0.1 --port 5000 --workers 1 >"$folder/server.log" 2>&1 </dev/null &
server=$!
echo "$server" >"$folder/server.pid"

for _ in $(seq 180); do
    kill -0 "$server" 2>/dev/null || break  # it exited: no point in waiting
    if python3 -c 'import urllib.request
urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=2)' 2>/dev/null; then
        echo "MLflow at http://127.0.0.1:5000 on the head (store: ${MLFLOW_BACKEND_STORE_URI%%:*})"
        exit 0
    fi
    sleep 1
done
echo "start_mlflow: the MLflow server did not come up; $folder/server.log says:" >&2
tail -n 20 "$folder/server.log" >&2
exit 1
