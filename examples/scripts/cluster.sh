#!/usr/bin/env bash
# A small Paygrid cluster on this machine, in one command: a throwaway PostgreSQL
# (Debian's postgresql server binaries), a development CA, a gateway simulator, three
# control units sharing the database (docs/cluster.md) and one execution unit serving all
# three. Ctrl-C stops everything.
#
#   examples/scripts/cluster.sh [DIR]          # state under DIR (default .paygrid/cluster)
#
# Then, from another shell:
#   paygrid cluster --store postgres://postgres@127.0.0.1:55432/postgres --partitions
#   PAYGRID_CERTS_DIR=DIR/certs paygrid --control https://127.0.0.1:50061 submit \
#       examples/specs/card-payment.yaml --input amount_minor=1250 --input currency=EUR \
#       --input card_token=tok_visa --watch
set -euo pipefail

DIR=${1:-.paygrid/cluster}
PAYGRID=${PAYGRID:-paygrid}
PORT=${PGPORT:-55432}
BIN=$(command -v initdb >/dev/null && dirname "$(command -v initdb)" || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
STORE="postgres://postgres@127.0.0.1:$PORT/postgres"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: the Debian `postgres` user runs the database.
    as_pg=(runuser -u postgres --)
    chown postgres "$DIR"
fi
if [ ! -d "$DIR/pg" ]; then
    "${as_pg[@]}" "$BIN/initdb" -A trust -U postgres -D "$DIR/pg" >/dev/null
fi
"${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/pg" -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR" \
    -l "$DIR/pg.log" -w start >/dev/null
pids=()
stop() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    "${as_pg[@]}" "$BIN/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM

[ -f "$DIR/certs/ca.crt" ] || "$PAYGRID" certs create --dir "$DIR/certs" --client root --client exec >/dev/null
export PAYGRID_CERTS_DIR="$DIR/certs"

"$PAYGRID" gateway-sim --listen 127.0.0.1:50060 --name alpha --data-dir "$DIR/gateway" &
pids+=($!)
controls=()
for n in 1 2 3; do
    port=$((50060 + n))
    "$PAYGRID" control --listen "127.0.0.1:$port" --store "$STORE" --cluster-member "cu-$n" \
        --data-dir "$DIR/cu-$n" &
    pids+=($!)
    controls+=("https://127.0.0.1:$port")
done
all=$(IFS=,; echo "${controls[*]}")
"$PAYGRID" --control "$all" exec --name exec --gateway alpha=https://127.0.0.1:50060@25 \
    --data-dir "$DIR/exec" &
pids+=($!)
echo "paygrid cluster: members ${controls[*]}; store $STORE; certificates $DIR/certs (Ctrl-C stops)"
wait
