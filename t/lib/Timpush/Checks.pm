package Timpush::Checks;

# What the adversarial suites (t/transport.t, t/resolve.t) check of every
# push: answered 200 within its deadline, one result per device and no
# other, no worker crashed; and the predicates they judge results with.
# A suite defines main::error_log() (its nginx's error.log as a string).

use strict;
use warnings;

use JSON::PP ();
use Test::More ();
use Time::HiRes ();

use Timpush::Push;

# One push to $users: answered 200 within $o{deadline} (+ $o{margin})
# seconds, one result per device of $tokens and no other, no worker
# crashed.  Returns token => result.
sub push_checked {
    my ($users, $tokens, %o) = @_;

    my $t0 = Time::HiRes::time();
    my ($status, $res, $raw) = Timpush::Push::push_message({
        to => $users, elems => [{ type => 'text', text => $o{text} }] });
    my $took = Time::HiRes::time() - $t0;

    Test::More::is($status, 200, 'the push is answered 200')
        or Test::More::diag(substr $raw // '', 0, 300);
    Test::More::cmp_ok($took, '<', $o{deadline} + $o{margin},
                       "answered within the deadline ($o{deadline} s)");

    my %results;
    push @{$results{$_->{token} // "user $_->{user_id}"}}, $_
        for @{$res->{results} || []};
    my @twice = grep { @{$results{$_}} != 1 } keys %results;
    Test::More::is_deeply([sort keys %results], [sort @$tokens],
                          'a result for every device, none for another');
    Test::More::is(scalar @twice, 0, 'each device once in the results');

    no_crash();
    return map { $_ => $results{$_}[0] } keys %results;
}

sub no_crash {
    # the master logs a crashed worker once it has reaped it
    Time::HiRes::sleep(0.3);
    my ($line) = main::error_log() =~ /^(.*exited on signal.*)$/m;
    Test::More::ok(!$line, 'no worker crashed') or Test::More::diag($line);
}

# every result is one $want->(result) is true of; diag of the first few
# that are not
sub check_results {
    my ($results, $want, $name) = @_;
    my @wrong = grep { !$want->($results->{$_}) } sort keys %$results;
    Test::More::is(scalar @wrong, 0, $name)
        or Test::More::diag(join "\n",
                            map { JSON::PP::encode_json($results->{$_}) }
                                @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
}

sub delivered {
    ($_[0]{status} // 0) == 200 && ($_[0]{apns_id} // '') =~ /^[0-9a-f-]{36}$/
}

# a failure the gateway explains: an error status and a reason
sub failed_5xx {
    ($_[0]{status} // 0) >= 500 && ($_[0]{status} // 0) <= 599
        && ($_[0]{reason} // '') =~ /^[A-Za-z]+$/
}

1;
