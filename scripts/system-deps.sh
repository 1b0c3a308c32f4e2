#!/usr/bin/env bash
# Install the Debian packages the project needs when we are allowed to (root or
# password-less sudo); otherwise print the exact command and carry on, since
# the code falls back (numpy synth, skipped browser test) where they are absent.
#   libfluidsynth3 fluidsynth fluid-soundfont-gm musescore-general-soundfont-small:
#     audio rendering (FluidR3_GM.sf2, MuseScore_General_Lite.sf3)
#   chromium: the headless browser test of the Gradio app
set -u
packages=(libfluidsynth3 fluidsynth fluid-soundfont-gm musescore-general-soundfont-small chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || {
  echo "system-deps: not a Debian/Ubuntu system; please install: ${missing[*]}"; exit 0; }
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "system-deps: missing ${missing[*]}; run:"
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq \
  && "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
  || echo "system-deps: could not install ${missing[*]}; the app falls back where it can"
exit 0
