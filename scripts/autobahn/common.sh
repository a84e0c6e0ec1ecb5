# Sourced by server.sh and client.sh (from the repository root, with ROOT and HERE set):
# the CI case subset, the agent name, the suite's install, the --tls runs' certificate.

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

# Writes a throwaway self-signed EC P-256 certificate for localhost and 127.0.0.1, valid two
# days, into DIR/cert.pem and its key into DIR/key.pem (for the --tls runs). P-256 with
# ECDSA, because the engine (rustls) and the suite (OpenSSL 1.1.1 in pyOpenSSL's wheel) both
# take it and it keeps the handshakes cheap. CA:FALSE, because `openssl req -x509` marks the
# certificate a CA by default and webpki refuses a CA as the server's own certificate
# (CaUsedAsEndEntity) even when the client trusts it.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2> "$1/openssl.log" ||
        { cat "$1/openssl.log" >&2; return 1; }
}
