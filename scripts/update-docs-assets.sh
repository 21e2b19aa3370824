#!/bin/sh
# Re-download the Swagger UI and ReDoc files that /docs and /redoc serve, from the npm registry.
# Usage: scripts/update-docs-assets.sh [SWAGGER_UI_VERSION [REDOC_VERSION]]
# Needs npm (only to download the two tarballs: nothing is installed or run). Rewrites
# stevedore_server/frontends/web/static/docs/ whole, README.md there included; review the diff, then run
# tests/test_docs_offline.py, the browser test too (make test runs it).
set -eu
swagger_ui_version=${1:-5.35.0}
redoc_version=${2:-2.5.4}
cd "$(dirname "$0")/.."
target=stevedore_server/frontends/web/static/docs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch PACKAGE VERSION: unpack the tarball in $work/PACKAGE, print its integrity hash.
fetch() {
    npm pack --silent --pack-destination "$work" "$1@$2" >/dev/null
    mkdir "$work/$1"
    tar -xzf "$work/$1-$2.tgz" -C "$work/$1" --strip-components=1
    npm view "$1@$2" dist.integrity
}

swagger_ui_integrity=$(fetch swagger-ui-dist "$swagger_ui_version")
redoc_integrity=$(fetch redoc "$redoc_version")

rm -rf "$target"
mkdir -p "$target"
swagger=$work/swagger-ui-dist
cp "$swagger/swagger-ui-bundle.js" "$swagger/swagger-ui-bundle.js.LICENSE.txt" "$swagger/swagger-ui.css" \
    "$swagger/favicon-32x32.png" "$target/"
cp "$swagger/LICENSE" "$target/LICENSE-swagger-ui"
cp "$swagger/NOTICE" "$target/NOTICE-swagger-ui"
redoc=$work/redoc
cp "$redoc/bundles/redoc.standalone.js" "$redoc/bundles/redoc.standalone.js.LICENSE.txt" "$target/"
cp "$redoc/LICENSE" "$target/LICENSE-redoc"

# ReDoc's side menu shows Redocly's logo from their CDN, with no option to turn it off: the one
# request to another host either page makes. Its URL becomes an empty image, which fails to load,
# and ReDoc's own error handler then leaves the logo out (the "API docs by Redocly" link stays).
logo='"https://cdn.redoc.ly/redoc/logo-mini.svg"'
if [ "$(grep -o -F "$logo" "$target/redoc.standalone.js" | wc -l)" != 1 ]; then
    echo "ReDoc $redoc_version does not name $logo once: look for its logo in the bundle" >&2
    exit 1
fi
sed -i "s#$logo#\"data:,\"#" "$target/redoc.standalone.js"

# The source maps are not vendored: a browser's developer tools would ask our server for them
# and get 404s. Only a comment on a line of its own is a reference; the same words inside the
# code (ReDoc's search worker is a string in its bundle) are data, left alone.
for file in "$target"/*.js "$target"/*.css; do
    sed -i -e '\%^//[#@] sourceMappingURL=%d' -e '\%^/\*[#@] sourceMappingURL=.*\*/$%d' "$file"
done
if grep -l -E '^(//|/\*)[#@] sourceMappingURL=' "$target"/*.js "$target"/*.css; then
    echo "a source map reference is left in the files above" >&2
    exit 1
fi

cat >"$target/README.md" <<EOF
# Swagger UI and ReDoc, served by /docs and /redoc

These files are copied unchanged from two npm packages, with two exceptions:
the comments naming a source map (\`sourceMappingURL\`, a file not copied
here) are removed, and in \`redoc.standalone.js\` the URL of Redocly's logo
in the side menu (on their CDN, and with no option to leave it out) is
replaced by an empty \`data:\` image, which ReDoc then hides. The pages
themselves are written in \`stevedore_server/docs.py\`; nothing here is
loaded from another host, so the pages work offline.

| file | from the npm package | licence |
| --- | --- | --- |
| \`swagger-ui-bundle.js\`, \`swagger-ui.css\`, \`favicon-32x32.png\` | \`swagger-ui-dist@$swagger_ui_version\` | Apache-2.0: \`LICENSE-swagger-ui\`, \`NOTICE-swagger-ui\`; bundled libraries: \`swagger-ui-bundle.js.LICENSE.txt\` |
| \`redoc.standalone.js\` (\`bundles/\` in the package) | \`redoc@$redoc_version\` | MIT: \`LICENSE-redoc\`; bundled libraries: \`redoc.standalone.js.LICENSE.txt\` |

npm integrity of the tarballs:

- \`swagger-ui-dist@$swagger_ui_version\`: \`$swagger_ui_integrity\`
- \`redoc@$redoc_version\`: \`$redoc_integrity\`

ReDoc stays on its 2.x line. ReDoc 3 (3.0.1 is the newest as this is
written) sends telemetry to Redocly unless told not to, names Redocly's CDN
for its icons and logo, and is an ES module: moving to it means changing the page and
its policy in \`docs.py\`, not only the version below.

## Updating

    scripts/update-docs-assets.sh [SWAGGER_UI_VERSION [REDOC_VERSION]]

downloads both tarballs with \`npm pack\` (the defaults are the versions above;
\`npm view swagger-ui-dist version\` and \`npm view redoc version\` name the
newest), rewrites this folder and this file, and fails if a source map
reference is left. Then run \`pytest tests/test_docs_offline.py\`: its browser
test loads both pages in headless Chromium and fails if either renders no
operation, asks another host for anything, or is refused something by the
pages' Content-Security-Policy (set in \`docs.py\`; a new version may need it
widened). The asset URLs carry a hash of each file, so browsers that cached
an older version fetch the new one.
EOF
ls -l "$target"
