#!/bin/sh
# STAND-IN for the K3s installer (get.k3s.io install.sh), used only by the liteboxd Molecule scenario
# "k3s". It is NOT the installer. Like the real one it takes INSTALL_K3S_EXEC (server|agent),
# INSTALL_K3S_VERSION, INSTALL_K3S_SKIP_DOWNLOAD and INSTALL_K3S_SKIP_START, "downloads" the binary
# (copies /opt/k3s-standin/k3s-<version>) unless told to skip, writes the systemd unit, its .env
# file and the uninstall script. Every call is recorded to /var/log/k3s-standin/installer.calls.
set -eu
cmd=${INSTALL_K3S_EXEC:-server}
name=k3s
[ "$cmd" = server ] || name=k3s-$cmd
mkdir -p /var/log/k3s-standin
printf '%s\n' "$(printf 'argv=%s' "$0 $*"; env | grep -E '^(INSTALL_K3S|K3S)_' | sort | sed 's/^/ /' | tr -d '\n')" \
  >> /var/log/k3s-standin/installer.calls

if [ "${INSTALL_K3S_SKIP_DOWNLOAD:-false}" != true ]; then
  install -m 0755 "/opt/k3s-standin/k3s-${INSTALL_K3S_VERSION}" /usr/local/bin/k3s
fi
[ -x /usr/local/bin/k3s ] || { echo "[ERROR] /usr/local/bin/k3s missing" >&2; exit 1; }

cat > "/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=Lightweight Kubernetes (liteboxd STAND-IN)
After=network-online.target
[Service]
Type=simple
EnvironmentFile=-/etc/systemd/system/$name.service.env
ExecStart=/usr/local/bin/k3s $cmd
KillMode=process
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
touch "/etc/systemd/system/$name.service.env"
chmod 0600 "/etc/systemd/system/$name.service.env"
env | grep -E '^K3S_' > "/etc/systemd/system/$name.service.env" || true

cat > "/usr/local/bin/$name-uninstall.sh" <<UNINSTALL
#!/bin/sh
# STAND-IN uninstall script written by the stand-in installer.
echo "argv=\$0" >> /var/log/k3s-standin/uninstall.calls
systemctl disable --now $name.service || true
rm -f /etc/systemd/system/$name.service /etc/systemd/system/$name.service.env /usr/local/bin/k3s
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s
systemctl daemon-reload
rm -f "\$0"
UNINSTALL
chmod 0755 "/usr/local/bin/$name-uninstall.sh"
systemctl daemon-reload
systemctl enable "$name.service" >/dev/null 2>&1
[ "${INSTALL_K3S_SKIP_START:-false}" = true ] || systemctl restart "$name.service"
