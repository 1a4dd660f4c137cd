package Timpush::Metrics;

# Reading timpush's /metrics (Prometheus text format 0.0.4) in the suites,
# for t/metrics.t.  Called fully qualified from "--- init" code:
#
#   my ($m, $raw) = Timpush::Metrics::scrape($port);   # GET /metrics
#   Timpush::Metrics::value($m, 'timpush_pushes_total', outcome => 'pushed')
#       the sum of the samples of that name whose labels include those given
#       (undef when there is none: a series that should exist and does not
#       is told apart from a zero)
#   Timpush::Metrics::samples($m, $name, %labels)   the matching samples,
#       each {name, labels => {...}, value}
#   Timpush::Metrics::series($m)   how many samples (lines) the scrape has
#   Timpush::Metrics::histogram_problems($m, $base, %labels)   what is wrong
#       with a histogram's series: buckets not monotonic, +Inf != _count, a
#       bucket missing; empty when all is well
#   Timpush::Metrics::promtool($raw)   (exit status, output) of
#       "promtool check metrics" on that text
#
# The parser is strict: a line that is not a comment, empty, or
# name{labels} value fails the scrape (it dies), so that a malformed line
# cannot hide among the ones a test looks at.

use strict;
use warnings;

use File::Temp ();
use HTTP::Tiny;

sub scrape {
    my ($port, $path) = @_;
    $port ||= $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    $path //= '/metrics';
    my $res = HTTP::Tiny->new(timeout => 60)
                        ->get("http://127.0.0.1:$port$path");
    die "scrape $port$path: $res->{status} $res->{content}\n"
        unless $res->{status} == 200;
    my $type = $res->{headers}{'content-type'} // '';
    die "scrape $port$path: Content-Type \"$type\"\n"
        unless $type =~ m{^text/plain; version=0\.0\.4};
    return (parse($res->{content}), $res->{content});
}

sub parse {
    my ($text) = @_;
    my (@samples, %type, %help);

    for my $line (split /\n/, $text) {
        next if $line eq '';
        if ($line =~ /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/) {
            ($1 eq 'TYPE' ? \%type : \%help)->{$2} = $3;
            next;
        }
        die "metrics: a comment that is neither HELP nor TYPE: $line\n"
            if $line =~ /^#/;

        $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/
            or die "metrics: malformed line: $line\n";
        my ($name, $labels, $value) = ($1, $2 // '', $3);
        die "metrics: not a number: $line\n"
            unless $value =~ /^-?(?:[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|\+?Inf|NaN)$/i;

        my %l;
        if ($labels ne '') {
            my $in = substr $labels, 1, -1;
            while ($in ne '') {
                $in =~ s/^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)//
                    or die "metrics: malformed labels: $line\n";
                my ($k, $v) = ($1, $2);
                $v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
                die "metrics: label $k twice: $line\n" if exists $l{$k};
                $l{$k} = $v;
            }
        }
        push @samples, { name => $name, labels => \%l, value => 0 + $value,
                         line => $line };
    }

    return { samples => \@samples, type => \%type, help => \%help };
}

sub samples {
    my ($m, $name, %want) = @_;
    return grep {
        my $s = $_;
        $s->{name} eq $name
            && !grep { ($s->{labels}{$_} // "\0") ne $want{$_} } keys %want
    } @{$m->{samples}};
}

sub value {
    my @s = samples(@_);
    return undef unless @s;
    my $sum = 0;
    $sum += $_->{value} for @s;
    return $sum;
}

sub series {
    my ($m) = @_;
    return scalar @{$m->{samples}};
}

# the label values of a metric's samples, joined, sorted ("k=v,k=v value")
sub dump {
    my ($m, $name) = @_;
    return join "\n", sort map {
        my $l = $_->{labels};
        join(',', map { "$_=$l->{$_}" } sort keys %$l) . " $_->{value}"
    } samples($m, $name);
}

sub histogram_problems {
    my ($m, $base, %labels) = @_;
    my @problems;
    my @buckets = sort { $a->[0] <=> $b->[0] }
                  map { [$_->{labels}{le} eq '+Inf' ? 9**9**9 : $_->{labels}{le},
                         $_->{value}] }
                  samples($m, "${base}_bucket", %labels);
    my $count = value($m, "${base}_count", %labels);
    my $sum = value($m, "${base}_sum", %labels);

    push @problems, "no _count" unless defined $count;
    push @problems, "no _sum" unless defined $sum;
    push @problems, "no buckets" unless @buckets;
    return @problems if @problems;

    push @problems, "the last bucket is not +Inf"
        unless $buckets[-1][0] == 9**9**9;
    push @problems, "+Inf bucket $buckets[-1][1] != _count $count"
        unless $buckets[-1][1] == $count;
    for my $i (1 .. $#buckets) {
        push @problems, "bucket le=$buckets[$i][0] ($buckets[$i][1]) < "
                        . "le=$buckets[$i - 1][0] ($buckets[$i - 1][1])"
            if $buckets[$i][1] < $buckets[$i - 1][1];
    }
    push @problems, "_sum $sum < 0" if $sum < 0;
    push @problems, "_sum $sum > 0 with _count 0" if $count == 0 && $sum > 0;
    return @problems;
}

sub promtool {
    my ($text) = @_;
    my $file = File::Temp->new(TEMPLATE => 'metrics-XXXXXX', TMPDIR => 1);
    print {$file} $text;
    close $file;
    my $out = `promtool check metrics < @{[$file->filename]} 2>&1`;
    return ($? >> 8, $out);
}

1;
