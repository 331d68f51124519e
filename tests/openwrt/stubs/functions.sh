# STAND-IN for OpenWrt's /lib/functions.sh (the parts our scripts use), for the shell
# harness, from its documented behaviour: config_load runs `uci -n export PACKAGE`
# and evaluates it with config/option/list callbacks (as the real uci_load does),
# config_get / config_get_bool / config_foreach read the result.
. "$HARNESS_DIR/stubs/jshn.sh"

type append >/dev/null 2>&1 || append() {
	local _var="$1" _val="$2" _sep="${3:- }"
	eval "$_var=\"\${$_var:+\${$_var}\$_sep}\$_val\""
}

config_load() {
	_C_SECTIONS=
	_C_N=0
	eval "$(uci -n export "$1" 2>/dev/null)"
	return 0
}

package() { return 0; }

config() {
	local name="$2"
	_C_N=$((_C_N + 1))
	[ -n "$name" ] || name="cfg$_C_N"
	_C_CUR="$name"
	append _C_SECTIONS "$name"
	eval "CONFIG_${name}_TYPE=\$1"
}

option() {
	eval "CONFIG_${_C_CUR}_$1=\$2"
}

list() {
	append "CONFIG_${_C_CUR}_$1" "$2"
}

config_get() {
	if [ $# -ge 4 ]; then
		eval "$1=\"\${CONFIG_$2_$3:-\$4}\""
	else
		eval "$1=\"\${CONFIG_$2_$3:-}\""
	fi
}

config_get_bool() {
	local _b
	config_get _b "$2" "$3" "$4"
	case "$_b" in
		1|on|true|yes|enabled) _b=1 ;;
		0|off|false|no|disabled) _b=0 ;;
		*) _b="$4" ;;
	esac
	eval "$1=\"\$_b\""
}

config_foreach() {
	local _fn="$1" _type="$2" _s _t
	shift 2
	for _s in $_C_SECTIONS; do
		eval "_t=\"\${CONFIG_${_s}_TYPE}\""
		if [ -z "$_type" ] || [ "$_t" = "$_type" ]; then
			"$_fn" "$_s" "$@"
		fi
	done
}
