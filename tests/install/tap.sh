# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# TAP helpers of the installation tests (sourced by scripts/install-tests and by in-root, in
# Debian's bash): "ok N - what" / "not ok N - what", numbered per script; the host counts them.
tap_n=0
ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $*"; }
not_ok() { tap_n=$((tap_n + 1)); echo "not ok $tap_n - $*"; }
# check WHAT CMD...: ok if CMD succeeds; its output goes to the log either way.
check() {
	local what=$1
	shift
	if "$@" >> "$TAP_LOG" 2>&1; then ok "$what"; else not_ok "$what (exit $?: $*)"; fi
}
# expect_line WHAT PATTERN CMD...: CMD must fail and print exactly one line, matching the
# extended regular expression PATTERN (the one-line failures: nothing else, no Kbuild output).
expect_line() {
	local what=$1 pattern=$2 out status=0 lines
	shift 2
	out=$("$@" 2>&1) || status=$?
	printf '$ %s\n%s\n' "$*" "$out" >> "$TAP_LOG"
	lines=$(printf '%s\n' "$out" | grep -c .)
	if [ "$status" != 0 ] && [ "$lines" = 1 ] && printf '%s\n' "$out" | grep -Eq -- "$pattern"; then
		ok "$what: $out"
	else
		not_ok "$what: exit $status, $lines lines, wanted one matching /$pattern/: $(printf '%s\n' "$out" | head -n3 | tr '\n' '|')"
	fi
}
# same WHAT A B: ok if the strings are equal.
same() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: '$2' != '$3'"; fi
}
