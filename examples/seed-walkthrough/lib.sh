# Shared by run.sh and two-site.sh (sourced): how a step is printed, how a namespace runs a
# command, the nginx "pod" and edgecore start. The caller defines W (its temp dir), PIDS, fail(),
# EDGECORE, and the associative array EC (edgecore pids by node).
step() { printf '\n==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
x() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# nginx_on NS IP ID [CONNECTIONS]: a real nginx on IP:80 in NS whose page says "served by ID".
nginx_on() {
  mkdir -p "$W/www-$3"; chmod 755 "$W/www-$3"
  printf '<!DOCTYPE html>\n<title>Welcome to nginx!</title>\n<h1>Welcome to nginx!</h1>\n<p>served by %s</p>\n' "$3" > "$W/www-$3/index.html"; chmod 644 "$W/www-$3/index.html"
  cat > "$W/nginx-$3.conf" <<CONF
worker_processes 1; pid $W/nginx-$3.pid; error_log $W/nginx-$3.err;
events { worker_connections ${4:-64}; }
http { access_log off; client_body_temp_path $W/cb-$3; proxy_temp_path $W/pt-$3; fastcgi_temp_path $W/ft-$3; uwsgi_temp_path $W/ut-$3; scgi_temp_path $W/st-$3;
  server { listen $2:80; root $W/www-$3; } }
CONF
  ip netns exec $1 nginx -c "$W/nginx-$3.conf" -g 'daemon off;' & PIDS+=($!)
}

# start_edgecore NS NODE: edgecore with $W/NODE.yaml, waited for until it says it is ready.
start_edgecore() {
  ip netns exec $1 node "$EDGECORE" --config "$W/$2.yaml" > "$W/$2.log" 2>&1 &
  EC[$2]=$!; PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '"edgecore ready"' "$W/$2.log" && return 0; sleep 0.1; done
  cat "$W/$2.log"; fail "edgecore on $2 did not become ready"
}

# edgecore_yaml NODE IFC BROKER [DNS-EXTRA]: $W/NODE.yaml — iptables mode on IFC, MQTT at BROKER,
# MetaServer on 127.0.0.1:10550, DNS on :53 (plus DNS-EXTRA keys); a caller may append modules.
edgecore_yaml() {
  cat > "$W/$1.yaml" <<CONF
apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: $W/$1/edgecore.db }
observability: { listen: 127.0.0.1:10351 }
log: { format: json }
drainSeconds: 2
modules:
  edgeHub: { nodeName: $1, mqtt: { server: tcp://$3:1883 } }
  metaManager: { metaServer: { enable: true, server: 127.0.0.1:10550 } }
  edgeMesh: { mode: iptables, listenInterface: $2, iptablesSyncSeconds: 5, dns: { listenPort: 53${4:+, $4} } }
CONF
}
