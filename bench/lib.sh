# Shared by the bench scripts (sourced): the reference servers' configs, written once.

# nginx_confs DIR BACKEND_PORT PROXY_PORT: DIR/www/index.html (a 600-byte page), DIR/backend.conf
# (nginx serving it on BACKEND_PORT) and DIR/ngproxy.conf (nginx reverse proxy on PROXY_PORT with
# upstream keepalive), temp paths and pids inside DIR.
nginx_confs() {
  local W=$1 BE=$2 NGP=$3
  mkdir -p "$W/www"; chmod 755 "$W/www"
  python3 -c "print('<!DOCTYPE html><title>bench</title><p>' + 'x'*540 + '</p>')" > "$W/www/index.html"
  chmod 644 "$W/www/index.html"
  local tmpdirs="client_body_temp_path $W/cb; proxy_temp_path $W/pt; fastcgi_temp_path $W/ft; uwsgi_temp_path $W/ut; scgi_temp_path $W/st;"
  cat > "$W/backend.conf" <<CONF
worker_processes 1; pid $W/be.pid; error_log $W/be.err;
events { worker_connections 4096; }
http { access_log off; $tmpdirs keepalive_requests 1000000;
  server { listen 127.0.0.1:$BE; root $W/www; } }
CONF
  cat > "$W/ngproxy.conf" <<CONF
worker_processes 1; pid $W/ng.pid; error_log $W/ng.err;
events { worker_connections 4096; }
http { access_log off; $tmpdirs keepalive_requests 1000000;
  upstream be { server 127.0.0.1:$BE; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGP; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
}

# unbound_conf FILE PORT NAME: unbound in the foreground on 127.0.0.1:PORT, one thread, answering
# NAME A 198.18.0.1 from local-data (BENCHMARKS.md's pitfalls: no daemon, chroot, user or pidfile).
unbound_conf() {
  cat > "$1" <<CONF
server:
  interface: 127.0.0.1
  port: $2
  num-threads: 1
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  local-zone: "cluster.local." static
  local-data: "$3. 5 IN A 198.18.0.1"
remote-control:
  control-enable: no
CONF
}
