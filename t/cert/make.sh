#!/bin/sh
# Makes the local PKI used by the tests, the quickstart and the benchmarks:
# a CA, an APNs-like server certificate for localhost and 127.0.0.1, client
# .p12 files whose subject UID is a bundle id (as Apple's push certificates),
# P-256 AuthKey_<KEYID>.p8 token keys, a few broken ones for the
# configuration checks, and the API's own TLS (its server certificate, a CA
# for the calling backends and a client certificate from it).  Nothing
# here is a real secret; nothing is committed.
#
# usage: t/cert/make.sh [OUTDIR]     (default: t/cert/out)

set -eu

out=${1:-$(dirname "$0")/out}
mkdir -p "$out"
cd "$out"

if [ -f .done ] && [ -f ca.crt ] && [ "$(cat .done)" = 4 ] \
   && [ -f backend.crt ]; then
    exit 0
fi

rm -rf ./*
umask 077

ossl() { openssl "$@" 2>/dev/null || openssl "$@"; }

# the CA
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.crt -days 3650 \
    -subj "/O=timpush test/CN=timpush test CA"

cat > ext.cnf <<'CNF'
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, DNS:api.push.apple.com, DNS:api.sandbox.push.apple.com
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
CNF

# the simulator's server certificate
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout server.key -out server.csr -subj "/O=timpush test/CN=localhost"
ossl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -extfile ext.cnf -extensions server -out server.crt

# a server certificate from another CA: the gateway must refuse it
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout untrusted.key -out untrusted.crt -days 3650 \
    -subj "/O=somebody else/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"

# client certificates as Apple issues them: UID is the bundle id
client() {
    name=$1 uid=$2 cn=$3 pass=$4
    ossl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/UID=$uid/CN=$cn: $uid/OU=TEAM123456/O=timpush test/C=US"
    ossl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key \
        -CAcreateserial -days 3650 -extfile ext.cnf -extensions client \
        -out "$name.crt"
    printf '%s\n' "$pass" > "$name.pass"
    ossl pkcs12 -export -inkey "$name.key" -in "$name.crt" \
        -name "$cn: $uid" -passout "file:$name.pass" -out "$name.p12"
}

client dev com.example.chat "Apple Development IOS Push Services" 'dev-secret'
client prod com.example.chat2 "Apple Push Services" 'prod secret!'

printf 'not the password\n' > wrong.pass

# an expired client certificate (openssl ca can set both dates)
mkdir -p ca.db
: > ca.db/index.txt
echo 1000 > ca.db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test
[test]
dir = ca.db
database = ca.db/index.txt
serial = ca.db/serial
new_certs_dir = ca.db
certificate = ca.crt
private_key = ca.key
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
UID = optional
commonName = supplied
CNF
ossl req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr \
    -subj "/UID=com.example.old/CN=Apple Push Services: com.example.old"
openssl ca -batch -config ca.cnf -in expired.csr -out expired.crt \
    -startdate 20200101000000Z -enddate 20210101000000Z \
    -extfile ext.cnf -extensions client -notext >/dev/null 2>&1
printf 'old\n' > expired.pass
ossl pkcs12 -export -inkey expired.key -in expired.crt \
    -passout file:expired.pass -out expired.p12

# dated certificates of the same app: valid only from 2099, and one that
# expires in ten days
dated() {
    name=$1 start=$2 end=$3
    ossl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/UID=com.example.chat/CN=Apple Push Services: com.example.chat"
    openssl ca -batch -config ca.cnf -in "$name.csr" -out "$name.crt" \
        -startdate "$start" -enddate "$end" \
        -extfile ext.cnf -extensions client -notext >/dev/null 2>&1
    printf '%s\n' "$name" > "$name.pass"
    ossl pkcs12 -export -inkey "$name.key" -in "$name.crt" \
        -passout "file:$name.pass" -out "$name.p12"
}
dated notyet 20990101000000Z 21000101000000Z
dated soon 20200101000000Z "$(date -u -d '+10 days' +%Y%m%d%H%M%SZ)"

# as older Keychain Access exports: RC2-40 and 3DES (OpenSSL 3's legacy
# provider); the same certificate and key as dev.p12
printf 'legacy secret\n' > legacy.pass
openssl pkcs12 -export -legacy -inkey dev.key -in dev.crt \
    -name "Apple Development IOS Push Services: com.example.chat" \
    -passout file:legacy.pass -out legacy.p12

# a certificate without a UID: topic= is then required
ossl req -newkey rsa:2048 -nodes -keyout nouid.key -out nouid.csr \
    -subj "/CN=no uid"
ossl x509 -req -in nouid.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -extfile ext.cnf -extensions client -out nouid.crt
printf 'nouid\n' > nouid.pass
ossl pkcs12 -export -inkey nouid.key -in nouid.crt \
    -passout file:nouid.pass -out nouid.p12

# token keys: AuthKey_<KEYID>.p8 is an unencrypted PKCS#8 P-256 key
p8() {
    ossl genpkey "$@" -out tmp.key
    ossl pkcs8 -topk8 -nocrypt -in tmp.key -out "AuthKey_$KID.p8"
    rm -f tmp.key
}
KID=ABC123DEFG p8 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
KID=XYZ987WVUT p8 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
KID=P384KEY001 p8 -algorithm EC -pkeyopt ec_paramgen_curve:P-384
KID=RSAKEY0001 p8 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
printf 'this is not a key\n' > AuthKey_GARBAGE001.p8

# the API's own TLS, for the access-control recipes (conf-examples/,
# t/secure.t): the API server's certificate (api.crt, from the test CA,
# for localhost and 127.0.0.1), a CA for the calling backends
# (backends-ca.crt) and a backend's client certificate from it
# (backend.crt; dev.crt, from the other CA, is one the API must refuse)
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout api.key -out api.csr -subj "/O=timpush test/CN=localhost"
ossl x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -extfile ext.cnf -extensions server -out api.crt
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout backends-ca.key -out backends-ca.crt -days 3650 \
    -subj "/O=timpush test/CN=timpush test backends CA"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout backend.key -out backend.csr \
    -subj "/O=timpush test/CN=chat-backend-1"
ossl x509 -req -in backend.csr -CA backends-ca.crt -CAkey backends-ca.key \
    -CAcreateserial -days 3650 -extfile ext.cnf -extensions client \
    -out backend.crt

rm -f ./*.csr ./*.srl ext.cnf ca.cnf
rm -rf ca.db
# certificates public, secrets readable by their owner only (the gateway
# warns about secret files others may read)
chmod 644 ./*
chmod 600 ./*.key ./*.p12 ./*.pass ./*.p8
echo 4 > .done
