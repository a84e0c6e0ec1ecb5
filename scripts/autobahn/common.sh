# Sourced by server.sh and client.sh (from the repository root, with ROOT and HERE set):
# the CI case subset, the agent name, the suite's install.

# Groups 1-11 whole, and of the compression groups 12-13 the first and the eleventh case of
# every sub-group (a small message, and an 8 KiB one cut into 256-byte fragments).
SUBSET="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"
for group in 12.1 12.2 12.3 12.4 12.5 13.1 13.2 13.3 13.4 13.5 13.6 13.7; do
    SUBSET="$SUBSET,$group.1,$group.11"
done
AGENT=bidir

# Installs the suite on first use; sets VENV to its Python 2.7 environment.
autobahn_setup() {
    bash "$HERE/setup.sh"
    VENV="${BIDIR_AUTOBAHN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/bidir/autobahn}/py27"
}
