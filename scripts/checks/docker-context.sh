#!/usr/bin/env bash
# Checks, without Docker, that the images can be built from what the build context
# holds: the files git knows (tracked, or new and not ignored) minus the .dockerignore
# patterns, matched the way Docker and azd's remote build match them
# (moby/patternmatcher: Go filepath.Match syntax plus `**`, later lines win, a path is
# left out when it or one of its parent folders is). It fails, naming the file, when
#   - something cargo needs is left out: the workspace manifests, Cargo.lock,
#     rust-toolchain.toml, .sqlx/, every file of every workspace member (src/**,
#     tests/testkit/**), the migrations and every include_str!/include_bytes! target;
#   - a COPY in src/*/Dockerfile names a path that is not in the context, a workspace
#     member's Cargo.toml is not copied before the dependency build, or the sources are
#     not touched after it (COPY keeps their old times: cargo would keep the stand-ins);
#   - a Dockerfile's Rust image disagrees with rust-toolchain.toml, or its SERVICE,
#     ENTRYPOINT and port disagree with the service (its package and the APP_PORT default
#     its settings list);
#   - the Dockerfiles differ in anything but their service-specific lines;
#   - a Dockerfile uses what needs BuildKit (RUN --mount, heredocs, a syntax directive);
#   - something git ignores (target/, .local/) or .git/ would be sent.
#
#   scripts/checks/docker-context.sh          # the checks
#   scripts/checks/docker-context.sh --list   # print the context's files, one a line
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

ERRORS=0
fail() {
  printf 'error: %s\n' "$*" >&2
  ERRORS=$((ERRORS + 1))
}

# --- .dockerignore -----------------------------------------------------------------

PATTERNS=()  # anchored extended regular expressions
NEGATED=()   # 1 when the line started with `!` (puts paths back), else 0

# glob_to_regex GLOB: the regular expression moby/patternmatcher compiles GLOB to.
glob_to_regex() {
  local glob="$1" re="" c i=0 n=${#1}
  while [ "$i" -lt "$n" ]; do
    c="${glob:i:1}"
    case "$c" in
      '*')
        if [ "${glob:i+1:1}" = '*' ]; then
          i=$((i + 1))
          [ "${glob:i+1:1}" = / ] && i=$((i + 1))
          if [ $((i + 1)) -ge "$n" ]; then re+='.*'; else re+='(.*/)?'; fi
        else
          re+='[^/]*'
        fi
        ;;
      '?') re+='[^/]' ;;
      '[' | ']') re+="$c" ;;
      \\)
        i=$((i + 1))
        c="${glob:i:1}"
        case "$c" in [.+\(\)\{\}\|^\$\\\[\]*?]) re+="\\$c" ;; *) re+="$c" ;; esac
        ;;
      [.+\(\)\{\}\|^\$]) re+="\\$c" ;;
      *) re+="$c" ;;
    esac
    i=$((i + 1))
  done
  printf '^%s$' "$re"
}

# clean_pattern PATTERN: what filepath.Clean and the leading-slash rule make of it.
clean_pattern() {
  local p="$1"
  while [[ "$p" == *//* ]]; do p="${p//\/\//\/}"; done
  while [[ "$p" == ./* ]]; do p="${p#./}"; done
  while [[ "$p" == */./* ]]; do p="${p//\/.\//\/}"; done
  [ "${#p}" -gt 1 ] && p="${p%/}"
  [ "${#p}" -gt 1 ] && p="${p#/}"
  printf '%s' "$p"
}

load_dockerignore() {
  local line negated
  [ -f .dockerignore ] || { fail ".dockerignore is missing: the whole repository (target/, .git/) would be the context"; return; }
  while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" == '#'* ]] && continue
    line="$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' <<<"$line")"
    [ -n "$line" ] || continue
    negated=0
    if [[ "$line" == '!'* ]]; then
      negated=1
      line="${line#!}"
      line="${line#"${line%%[![:space:]]*}"}"
    fi
    PATTERNS+=("$(glob_to_regex "$(clean_pattern "$line")")")
    NEGATED+=("$negated")
  done <.dockerignore
}

# excluded PATH: whether .dockerignore leaves PATH out (MatchesOrParentMatches).
excluded() {
  local path="$1" matched=0 k prefix part match
  local -a parts
  IFS=/ read -r -a parts <<<"$path"
  for k in "${!PATTERNS[@]}"; do
    # An exclusion only matters while not matched, a negation only once matched.
    if [ "${NEGATED[k]}" = 1 ] && [ "$matched" = 0 ]; then continue; fi
    if [ "${NEGATED[k]}" = 0 ] && [ "$matched" = 1 ]; then continue; fi
    match=0
    if [[ "$path" =~ ${PATTERNS[k]} ]]; then
      match=1
    else
      prefix=""
      for part in "${parts[@]:0:${#parts[@]}-1}"; do
        prefix="${prefix:+$prefix/}$part"
        if [[ "$prefix" =~ ${PATTERNS[k]} ]]; then match=1; break; fi
      done
    fi
    if [ "$match" = 1 ]; then
      if [ "${NEGATED[k]}" = 1 ]; then matched=0; else matched=1; fi
    fi
  done
  [ "$matched" = 1 ]
}

load_dockerignore

# --- the context -------------------------------------------------------------------

ALL_FILES=()   # what git knows, as it is in the working tree
CONTEXT=()     # ... minus what .dockerignore leaves out
declare -A IN_CONTEXT=()
while IFS= read -r file; do
  [ -f "$file" ] || continue  # deleted in the working tree
  ALL_FILES+=("$file")
  if ! excluded "$file"; then
    CONTEXT+=("$file")
    IN_CONTEXT["$file"]=1
  fi
done < <(git ls-files --cached --others --exclude-standard | sort -u)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${CONTEXT[@]}"
  exit 0
fi

# in_context PATH: PATH is a file of the context, or a folder with at least one.
in_context() {
  local path="${1%/}" file
  [ -n "${IN_CONTEXT[$path]:-}" ] && return 0
  for file in "${CONTEXT[@]}"; do
    [[ "$file" == "$path"/* ]] && return 0
  done
  return 1
}

# require PATH WHY: PATH must be in the context.
require() {
  if [ ! -e "$1" ]; then
    fail "$1 does not exist ($2)"
  elif ! in_context "$1"; then
    fail "$1 is left out of the build context by .dockerignore ($2)"
  fi
}

# --- what cargo needs --------------------------------------------------------------

MEMBERS=()
while IFS= read -r member; do MEMBERS+=("$member"); done < <(
  awk '/^members[[:space:]]*=/ { on = 1 } on { print } on && /]/ { exit }' Cargo.toml |
    grep -o '"[^"]*"' | tr -d '"')
[ "${#MEMBERS[@]}" -gt 0 ] || fail "no workspace members found in Cargo.toml"

require Cargo.toml "the workspace manifest"
require Cargo.lock "cargo build --locked"
require rust-toolchain.toml "the pinned Rust version"
require .sqlx "sqlx's offline query data (SQLX_OFFLINE=true)"

for file in "${ALL_FILES[@]}"; do
  case "$file" in
    .sqlx/*) [ -n "${IN_CONTEXT[$file]:-}" ] || fail "$file is left out of the build context by .dockerignore (sqlx offline data)" ;;
  esac
  for member in "${MEMBERS[@]}"; do
    if [[ "$file" == "$member"/* ]] && [ -z "${IN_CONTEXT[$file]:-}" ]; then
      fail "$file is left out of the build context by .dockerignore (a file of workspace member $member)"
    fi
  done
done

for member in "${MEMBERS[@]}"; do
  require "$member/Cargo.toml" "workspace member $member"
  # sqlx::migrate!() embeds <crate>/migrations; migrate!("dir") a folder of the crate.
  while IFS= read -r hit; do
    dir="${hit#*migrate!(}"
    dir="${dir%%)*}"
    dir="${dir//\"/}"
    require "$member/${dir:-migrations}" "sqlx::migrate! in ${hit%%:*}"
  done < <(grep -rnoE 'migrate!\([^)]*\)' "$member" --include='*.rs' || true)
  # include_str!/include_bytes! paths are relative to the file that names them.
  while IFS= read -r hit; do
    source_file="${hit%%:*}"
    target="$(sed -E 's/.*include_(str|bytes)!\("([^"]+)"\).*/\2/' <<<"$hit")"
    resolved="$(realpath -m --relative-to="$ROOT" "$(dirname "$source_file")/$target")"
    require "$resolved" "include_${hit#*include_} in $source_file"
  done < <(grep -rnoE 'include_(str|bytes)!\("[^"]+"\)' "$member" --include='*.rs' | cut -d: -f1,3- || true)
done

# --- the Dockerfiles ---------------------------------------------------------------

CHANNEL="$(sed -n 's/^channel[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' rust-toolchain.toml)"
DOCKERFILES=()
for file in src/*/Dockerfile; do [ -f "$file" ] && DOCKERFILES+=("$file"); done
[ "${#DOCKERFILES[@]}" -gt 0 ] || fail "no src/*/Dockerfile found"

# The lines a service's Dockerfile may have of its own; the rest must be the same.
SERVICE_LINES='^# Image of the |^#   docker build -f |^ARG SERVICE=|org\.opencontainers\.image\.description=|^    APP_PORT=|^EXPOSE |^ENTRYPOINT '

for dockerfile in "${DOCKERFILES[@]}"; do
  service="$(basename "$(dirname "$dockerfile")")"

  from="$(sed -n 's/^FROM rust:\([^ ]*\).*/\1/p' "$dockerfile" | head -n 1)"
  [ "${from%%-*}" = "$CHANNEL" ] ||
    fail "$dockerfile builds with rust:$from but rust-toolchain.toml pins $CHANNEL"

  if grep -nE '^[[:space:]]*RUN[[:space:]]+--mount|<<[-]?[A-Za-z"'"'"']|^#[[:space:]]*syntax=' "$dockerfile" >/dev/null; then
    fail "$dockerfile uses BuildKit-only syntax (RUN --mount, a heredoc or a syntax directive)"
  fi

  # Every COPY source (not --from) must be in the context.
  while IFS= read -r line; do
    read -r -a words <<<"${line#COPY }"
    sources=()
    for word in "${words[@]}"; do [[ "$word" == --* ]] || sources+=("$word"); done
    unset 'sources[${#sources[@]}-1]'
    for src in "${sources[@]}"; do
      [ "$src" = . ] || [ "$src" = ./ ] && continue
      require "$src" "COPY in $dockerfile"
    done
  done < <(grep -E '^COPY ' "$dockerfile" | grep -v -- '--from=')

  # COPY keeps old modification times: without the touch, cargo keeps the stand-ins. The
  # touch must reach the top folder of every workspace member.
  if grep -qF "fn main() {}" "$dockerfile"; then
    touch_line="$(grep -E '^RUN find [a-z/ ]+ -type f -exec touch' "$dockerfile" || true)"
    if [ -z "$touch_line" ]; then
      fail "$dockerfile builds stand-in sources first but does not touch the real ones before building them: cargo would keep the stand-in binary"
    else
      for member in "${MEMBERS[@]}"; do
        [[ " ${touch_line#RUN find } " == *" ${member%%/*} "* ]] ||
          fail "$dockerfile does not touch ${member%%/*}/ after copying it: cargo would keep the stand-in build of $member"
      done
    fi
  fi

  for member in "${MEMBERS[@]}"; do
    grep -qE "^COPY ${member}/Cargo.toml ${member}/?\$" "$dockerfile" ||
      fail "$dockerfile does not copy $member/Cargo.toml before the dependency build (cargo needs every member's manifest)"
  done

  package="$(sed -n 's/^name[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "src/$service/Cargo.toml" | head -n 1)"
  [ "$package" = "$service" ] || fail "src/$service/Cargo.toml names package '$package', not '$service'"
  grep -qx "ARG SERVICE=$service" "$dockerfile" || fail "$dockerfile must set ARG SERVICE=$service"
  grep -qxF "ENTRYPOINT [\"/usr/local/bin/$service\"]" "$dockerfile" ||
    fail "$dockerfile must end with ENTRYPOINT [\"/usr/local/bin/$service\"]"

  # The service's settings list, which a unit test holds against the default the code applies.
  default_port="$(sed -nE 's/^APP_PORT \| ([0-9]+) \|.*/\1/p' "src/$service/src/"*.rs | head -n 1)"
  env_port="$(sed -n 's/^[[:space:]]*APP_PORT=\([0-9]*\).*/\1/p' "$dockerfile")"
  expose_port="$(sed -n 's/^EXPOSE \([0-9]*\).*/\1/p' "$dockerfile")"
  if [ -z "$default_port" ] || [ "$env_port" != "$default_port" ] || [ "$expose_port" != "$default_port" ]; then
    fail "$dockerfile: APP_PORT=$env_port and EXPOSE $expose_port must both be $service's default port (${default_port:-not found})"
  fi
  grep -qE '^ENV APP_HOST=0\.0\.0\.0([[:space:]]|$)' "$dockerfile" || fail "$dockerfile must set APP_HOST=0.0.0.0 (the default 127.0.0.1 is unreachable in a container)"

  if [ "$dockerfile" != "${DOCKERFILES[0]}" ]; then
    if ! diff -u --label "${DOCKERFILES[0]}" --label "$dockerfile" \
      <(grep -vE "$SERVICE_LINES" "${DOCKERFILES[0]}") <(grep -vE "$SERVICE_LINES" "$dockerfile") >&2; then
      fail "$dockerfile differs from ${DOCKERFILES[0]} in more than its service-specific lines (diff above)"
    fi
  fi
done

# --- what must stay out ------------------------------------------------------------

excluded .git || fail ".git/ would be sent to the build: add it to .dockerignore"
while IFS= read -r path; do
  path="${path%/}"
  excluded "$path" || fail "$path (ignored by git) would be sent to the build: add it to .dockerignore"
done < <(git ls-files --others --ignored --exclude-standard --directory)

if [ "$ERRORS" -gt 0 ]; then
  printf 'docker build context: %d problem(s)\n' "$ERRORS" >&2
  exit 1
fi
bytes="$(cat -- "${CONTEXT[@]}" | wc -c)"
printf 'docker build context: %d files, %d KiB; %s build from it\n' \
  "${#CONTEXT[@]}" "$((bytes / 1024))" "${DOCKERFILES[*]}"
