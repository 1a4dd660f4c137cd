#!/usr/bin/perl
# Mints an APNs provider token (ES256 JWT) with the openssl command line.
#
# usage: t/mock/jwt.pl KEY.p8 KEY_ID TEAM_ID [IAT] [ALG]
#   IAT defaults to now; ALG (the header's "alg") to ES256.  The signature
#   is always ES256: a wrong ALG is for testing the simulator's checks.

use strict;
use warnings;
use File::Temp qw(tempfile);

my ($key, $kid, $iss, $iat, $alg) = @ARGV;
die "usage: $0 KEY.p8 KEY_ID TEAM_ID [IAT] [ALG]\n" unless defined $iss;
$iat = time() unless defined $iat && length $iat;
$alg = 'ES256' unless defined $alg;

sub b64url {
    my ($s) = @_;
    require MIME::Base64;
    my $b = MIME::Base64::encode_base64($s, '');
    $b =~ tr{+/}{-_};
    $b =~ s/=+$//;
    return $b;
}

my $input = b64url(qq({"alg":"$alg","kid":"$kid"})) . '.'
    . b64url(qq({"iss":"$iss","iat":$iat}));

my ($fh, $tmp) = tempfile(UNLINK => 1);
print $fh $input;
close $fh;

open(my $sig, '-|', 'openssl', 'dgst', '-sha256', '-sign', $key, $tmp)
    or die "openssl: $!\n";
binmode $sig;
my $der = do { local $/; <$sig> };
close $sig or die "openssl dgst failed\n";

# DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each
my ($rlen) = unpack('x3 C', $der);
my $r = substr($der, 4, $rlen);
my ($slen) = unpack('C', substr($der, 5 + $rlen, 1));
my $s = substr($der, 6 + $rlen, $slen);

for ($r, $s) {
    s/^\x00+//;
    $_ = ("\x00" x (32 - length)) . $_;
}

print $input, '.', b64url($r . $s), "\n";
