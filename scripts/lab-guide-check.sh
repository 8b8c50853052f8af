#!/usr/bin/env bash
# Runs the user guide's lab walk-through (docs/user-guide.md, the block after the "lab walk-through"
# marker) exactly as written, on the lab `scripts/lab up` built, and checks what it printed: the
# Pod status patch accepted (200), the echo's JSON through the gateway with the token, 401 without.
# A guide whose commands stop working fails the lab command instead of a newcomer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
block=$(awk '/<!-- lab walk-through:/ {found=1; next} found && /^```bash$/ {inside=1; next}
             inside && /^```$/ {exit} inside {print}' docs/user-guide.md)
if [[ -z "$block" ]]; then
  echo "docs/user-guide.md has no lab walk-through block after its marker" >&2
  exit 1
fi
# The guide names the default lab; a namespaced lab (LITEBOXD_LAB_NAMESPACE) prefixes its
# containers and its state directory.
ns=${LITEBOXD_LAB_NAMESPACE:-}
block=${block//lbx-lab-/${ns}lbx-lab-}
block=${block//\/lab\/lbx\//\/lab\/${ns}lbx\/}
output=$(bash -c "$block" 2>&1) || {
  printf '%s\n' "$output" >&2
  echo "the user guide's lab walk-through failed (above)" >&2
  exit 1
}
printf '%s\n' "$output"
missing=()
grep -qx 200 <<<"$output" || missing+=("the Pod status patch answered 200")
grep -q '"client": "' <<<"$output" || missing+=("the echo's JSON through the gateway with the token")
grep -qx 401 <<<"$output" || missing+=("401 from the gateway without a token")
if ((${#missing[@]})); then
  printf 'the user guide walk-through did not print: %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "the user guide's lab walk-through works as written"
