# STAND-IN for OpenWrt's /usr/share/libubox/jshn.sh, written from its documented
# behaviour (not its code) for the shell harness: json_init / json_add_* /
# json_close_* / json_dump build one JSON document; json_load / json_get_var(s) /
# json_get_values / json_for_each_item read one. Booleans are 1/0 when read, as jshn
# gives them. Limits of the stand-in: reading sees the top level (scalars and arrays
# of scalars) only; written strings must not contain newlines.

_jshn_esc() {
	local rest="$1" out=""
	while :; do
		case "$rest" in
			*[\\\"]*)
				local head="${rest%%[\\\"]*}"
				local ch="${rest#"$head"}"
				ch="${ch%"${ch#?}"}"
				out="$out$head\\$ch"
				rest="${rest#"$head"?}"
				;;
			*) break ;;
		esac
	done
	printf '%s' "$out$rest"
}

_jshn_top() {
	printf '%s' "${_J_STACK#"${_J_STACK%?}"}"
}

# separator and key for the next value
_jshn_lead() {
	local first="${_J_FIRST#"${_J_FIRST%?}"}"
	[ "$first" = 1 ] || _J_OUT="$_J_OUT,"
	_J_FIRST="${_J_FIRST%?}0"
	[ "$(_jshn_top)" = o ] && _J_OUT="$_J_OUT\"$(_jshn_esc "$1")\":"
	return 0
}

json_init() {
	_J_OUT="{"
	_J_STACK="o"
	_J_FIRST="1"
}

json_cleanup() {
	json_init
}

json_add_string() {
	_jshn_lead "$1"
	_J_OUT="$_J_OUT\"$(_jshn_esc "$2")\""
}

json_add_int() {
	_jshn_lead "$1"
	local n="${2:-0}"
	_J_OUT="$_J_OUT$((n + 0))"
}

json_add_double() {
	_jshn_lead "$1"
	_J_OUT="$_J_OUT$2"
}

json_add_boolean() {
	_jshn_lead "$1"
	case "$2" in
		1|true) _J_OUT="${_J_OUT}true" ;;
		*) _J_OUT="${_J_OUT}false" ;;
	esac
}

json_add_object() {
	_jshn_lead "$1"
	_J_OUT="$_J_OUT{"
	_J_STACK="${_J_STACK}o"
	_J_FIRST="${_J_FIRST}1"
}

json_add_array() {
	_jshn_lead "$1"
	_J_OUT="$_J_OUT["
	_J_STACK="${_J_STACK}a"
	_J_FIRST="${_J_FIRST}1"
}

json_close_object() {
	_J_OUT="$_J_OUT}"
	_J_STACK="${_J_STACK%?}"
	_J_FIRST="${_J_FIRST%?}"
}

json_close_array() {
	_J_OUT="$_J_OUT]"
	_J_STACK="${_J_STACK%?}"
	_J_FIRST="${_J_FIRST%?}"
}

json_dump() {
	local out="$_J_OUT" stack="$_J_STACK"
	while [ -n "$stack" ]; do
		case "$stack" in
			*o) out="$out}" ;;
			*a) out="$out]" ;;
		esac
		stack="${stack%?}"
	done
	printf '%s\n' "$out"
}

json_set_namespace() {
	[ -n "$2" ] && eval "$2=''"
	return 0
}

json_load() {
	local code
	code="$("$HARNESS_PYTHON" "$HARNESS_DIR/bin/jshn-parse" "$1")" || return 1
	eval "$code"
}

json_get_var() {
	case "$2" in
		*[!A-Za-z0-9_]*|'') eval "$1=''"; return 1 ;;
	esac
	eval "$1=\"\${_JV_$2-}\""
	eval "[ -n \"\${_JV_$2+x}\" ]"
}

json_get_vars() {
	local spec name default
	for spec in "$@"; do
		name="${spec%%:*}"
		default=
		[ "$name" = "$spec" ] || default="${spec#*:}"
		json_get_var "$name" "$name" || eval "$name=\"\$default\""
	done
	return 0
}

json_get_type() {
	eval "$1=\"\${_JT_$2-}\""
}

json_get_values() {
	local dest="$1" key="$2" n i v out=""
	eval "n=\"\${_JA_${key}_n:-0}\""
	i=1
	while [ "$i" -le "$n" ]; do
		eval "v=\"\${_JA_${key}_$i}\""
		out="${out:+$out }$v"
		i=$((i + 1))
	done
	eval "$dest=\"\$out\""
}

json_for_each_item() {
	[ "$#" -ge 2 ] || return 0
	local fn="$1" key="$2" type n i v
	shift 2
	json_get_type type "$key"
	case "$type" in
		array)
			eval "n=\"\${_JA_${key}_n:-0}\""
			i=1
			while [ "$i" -le "$n" ]; do
				eval "v=\"\${_JA_${key}_$i}\""
				"$fn" "$v" "$i" "$@"
				i=$((i + 1))
			done
			;;
		'') ;;
		*)
			json_get_var v "$key"
			"$fn" "$v" "" "$@"
			;;
	esac
}
