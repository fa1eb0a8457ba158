# Source after declaring defaults: turns "--foo_bar value" (or "--foo-bar value", "--foo_bar=value")
# into foo_bar=value for every variable the caller already defined; "--help" prints $help_message.
# Unknown options and positional arguments are an error, so a typo never silently runs with the
# default. The one option parser of every shell script here (run.sh, local/, egs/*/local/).
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "${help_message:-no help}"; exit 0 ;;
    --*=*) __opt=${1%%=*}; __val=${1#*=}; __n=1 ;;
    --*)
      __opt=$1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      __val=$2; __n=2 ;;
    *) echo "$0: unexpected argument '$1' (see $0 --help)" >&2; exit 1 ;;
  esac
  __name=${__opt#--}; __name=${__name//-/_}
  if [ -z "${!__name+set}" ]; then
    echo "$0: unknown option ${__opt} (see $0 --help)" >&2; exit 1
  fi
  printf -v "${__name}" '%s' "${__val}"
  shift "${__n}"
done
unset __opt __val __n __name
