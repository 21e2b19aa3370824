#!/bin/sh
# Re-download the htmx and Pico CSS files that the web console serves, from the npm registry.
# Usage: scripts/update-console-assets.sh [HTMX_VERSION [PICO_VERSION]]
# Needs npm (only to download the two tarballs: nothing is installed or run). Rewrites
# stevedore_server/frontends/console/static/vendor/ whole, README.md there included; review the diff, then run
# tests/test_console.py and tests/test_console_browser.py (make test runs both).
set -eu
htmx_version=${1:-2.0.11}
pico_version=${2:-2.1.1}
cd "$(dirname "$0")/.."
target=stevedore_server/frontends/console/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch PACKAGE VERSION: unpack the tarball in $work/PACKAGE, print its integrity hash.
fetch() {
    npm pack --silent --pack-destination "$work" "$1@$2" >/dev/null
    mkdir -p "$work/$1"
    tar -xzf "$work"/*.tgz -C "$work/$1" --strip-components=1
    rm "$work"/*.tgz
    npm view "$1@$2" dist.integrity
}

htmx_integrity=$(fetch htmx.org "$htmx_version")
pico_integrity=$(fetch @picocss/pico "$pico_version")

rm -rf "$target"
mkdir -p "$target"
cp "$work/htmx.org/dist/htmx.min.js" "$target/"
cp "$work/htmx.org/LICENSE" "$target/LICENSE-htmx"
cp "$work/@picocss/pico/css/pico.classless.min.css" "$target/"
cp "$work/@picocss/pico/LICENSE.md" "$target/LICENSE-pico"

if grep -l -E '(//|/\*)[#@] sourceMappingURL=' "$target"/*.js "$target"/*.css; then
    echo "a source map reference is in the files above: remove it (the maps are not vendored)" >&2
    exit 1
fi

cat >"$target/README.md" <<END
# htmx and Pico CSS, served by the web console

These files are copied unchanged from two npm packages by
\`scripts/update-console-assets.sh\`. The console's pages, its own script
(\`../console.js\`) and its own styles (\`../console.css\`) are written in
\`stevedore_server/console/\`; nothing is loaded from another host, so the
console works offline.

| file | from the npm package | licence |
| --- | --- | --- |
| \`htmx.min.js\` (\`dist/\` in the package) | \`htmx.org@$htmx_version\` | 0BSD: \`LICENSE-htmx\` |
| \`pico.classless.min.css\` (\`css/\` in the package) | \`@picocss/pico@$pico_version\` | MIT: \`LICENSE-pico\` |

npm integrity of the tarballs:

- \`htmx.org@$htmx_version\`: \`$htmx_integrity\`
- \`@picocss/pico@$pico_version\`: \`$pico_integrity\`

htmx stays on its 2.x line, which its authors still maintain; htmx 4 changed
its events and configuration, so moving to it means changing \`console.js\`
and the pages, not only the version above. The pages configure htmx (a
\`htmx-config\` meta element) to evaluate no script and add no style
element, as the console's Content-Security-Policy allows neither.

## Updating

    scripts/update-console-assets.sh [HTMX_VERSION [PICO_VERSION]]

then run \`pytest tests/test_console.py tests/test_console_browser.py\`: the
browser test loads the console in headless Chromium and fails if it asks
another host for anything, or if the page's policy refuses anything. The
asset URLs carry a hash of each file, so browsers that cached an older
version fetch the new one.
END
