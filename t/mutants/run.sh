#!/usr/bin/env bash
# Mutation testing: every t/mutants/*.mutant is one small deliberate bug.
# Each is applied to a copy of the working tree, built and tested there;
# the suites must fail on it ("killed").  Format: t/mutants/README.md.
#
#   t/mutants/run.sh                 every mutant (make test-mutants)
#   t/mutants/run.sh NAME ...        only these (make test-mutants MUTANTS="...")
#   t/mutants/run.sh --check [NAME ...]   only check that each still applies
#
#   MUTANT_TIMEOUT=900   seconds per mutant, build and suites; a mutant still
#                        running then counts as killed by the timeout (a hang)
#   MUTANT_LOGS=dir      each mutant's log (build and suite output) and the
#                        table, default build/mutants
#
# A mutant whose original text is not found exactly once in its file is
# STALE: the code moved on and the mutant must be rewritten.  That is a
# failure of the harness, never a kill.
#
# How a mutant is run: the working tree (git's tracked and untracked files,
# not the ignored ones such as build/ and t/servroot*) and the test
# certificates are copied once into a temporary "base", with the configured
# nginx tree of build/ (its Makefile's paths rewritten, timestamps kept, so
# that make only recompiles what a mutant changes).  Each mutant gets a copy
# of the base, is applied there, "make build" runs, then its hinted suites
# and every other suite, one file at a time with t/run.sh (own Redis, free
# ports, own TEST_NGINX_SERVROOT), stopping at the first file that fails.
# A kill is believed only if that file passes on the unmutated base (run
# once per file, when a mutant first names it): otherwise the result is
# UNSURE, a failure of the harness too.
#
# Exit status: 0 when every mutant was killed; 1 when one survived or was
# stale or unsure; 2 when the harness itself could not run.

set -u

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mutdir=$root/t/mutants
limit=${MUTANT_TIMEOUT:-900}

die() {
    echo "mutants: $*" >&2
    exit 2
}

# Parses a mutant, checks that its original text occurs exactly once in
# its file under the tree given, and with "apply" writes the replacement
# there.  Prints the file and the hinted suites ("file<TAB>suites").
# Exit 3: stale or malformed, with the reason on stderr.
mutant_tool() {
    perl -e '
        use strict;
        use warnings;
        my ($mode, $mutant, $tree) = @ARGV;
        my $name = $mutant =~ s{.*/}{}r =~ s{\.mutant$}{}r;
        sub bad { print STDERR "STALE: $name: @_\n"; exit 3 }

        open my $in, "<", $mutant or bad("cannot read $mutant: $!");
        my (%h, @comment, $orig, $repl, $part);
        while (my $line = <$in>) {
            if ($line =~ /^--- (original|replacement)$/) {
                $part = $1;
                ($part eq "original" ? $orig : $repl) = "";
            } elsif (defined $part) {
                ($part eq "original" ? $orig : $repl) .= $line;
            } elsif ($line =~ /^#/) {
                push @comment, $line;
            } elsif ($line =~ /^(file|suites):\s*(.*?)\s*$/) {
                $h{$1} = $2;
            } elsif ($line =~ /\S/) {
                bad("unexpected line before the text: $line");
            }
        }
        @comment or bad("no comment saying which rule it breaks");
        $h{file} or bad("no \"file:\" line");
        defined $orig && length $orig or bad("no \"--- original\" text");
        defined $repl or bad("no \"--- replacement\" section");
        $orig ne $repl or bad("the replacement is the original");

        my $path = "$tree/$h{file}";
        open my $src, "<", $path or bad("cannot read $h{file}: $!");
        my $text = do { local $/; <$src> };
        close $src;
        my ($n, $at) = (0, -1);
        for (my $i = index $text, $orig; $i >= 0;
             $i = index $text, $orig, $i + 1) {
            ($n, $at) = ($n + 1, $i);
        }
        $n == 1 or bad("the original text is found $n times in $h{file}"
                       . " (must be exactly once): rewrite the mutant");

        if ($mode eq "apply") {
            substr($text, $at, length $orig) = $repl;
            open my $out, ">", $path or bad("cannot write $h{file}: $!");
            print $out $text;
            close $out or bad("cannot write $h{file}: $!");
        }
        print "$h{file}\t", $h{suites} // "", "\n";
    ' "$@"
}

# The objs Makefile names the tree it was configured in; a copy must build
# its own sources.  Its timestamp is kept: every object depends on it.
retarget_build() {
    local from=$1 to=$2 mk=$2/build/objs/Makefile
    sed "s#$from/#$to/#g" "$mk" > "$mk.new" && touch -r "$mk" "$mk.new" &&
        mv "$mk.new" "$mk"
}

# The first failing assertion of suite $2's verbose output $1 (or why
# none), without the test number and the tree's path, cut to 160
# characters (the runner quotes whole answers).  An assertion of a block's
# "--- init" code does not name its block: the runner's own next
# assertion, of the same block, does.
first_failure() {
    local log=$1 suite=$2 tree=$3 line
    line=$(perl -ne '
        if (!defined $first) {
            $first = $1 if /^not ok \d+ - (.*)/;
            $named = $first =~ / TEST \S+: / if defined $first;
        } elsif (!$named && / - \S+ (TEST \S+:)/) {
            ($first, $named) = ("$1 ... - $first", 1);
        }
        END { print $first // "" }
    ' "$log")
    [ -n "$line" ] ||
        line=$(grep -m1 -E 'Dubious|Parse errors|No plan|Bailout' "$log") ||
        line="failed without a failing assertion (see the log)"
    line=${line#"$tree/$suite "}
    line=${line//"$tree/"/}
    [ ${#line} -le 160 ] || line="${line:0:157}..."
    echo "$line"
}

# --one NAME TREE LOG: build TREE (already mutated) and run the suites,
# hinted ones first; writes "result<TAB>killed by" to TREE/.result.  Runs
# under timeout(1) in a process group of its own.
one() {
    local name=$1 tree=$2 log=$3 hints=$4 f line
    local -a suites

    cd "$tree" || exit 2
    if ! make build >> "$log" 2>&1; then
        line=$(grep -m1 -E 'error:|Error [0-9]' "$log")
        printf 'killed\tthe compiler: %s\n' "${line//"$tree/"/}" > .result
        return
    fi

    suites=($hints)
    for f in t/*.t t/unit; do
        [ -e "$f" ] || continue
        [[ " $hints " == *" $f "* ]] || suites+=("$f")
    done

    for f in "${suites[@]}"; do
        [ -e "$f" ] || { echo "mutants: $name: no suite $f" >> "$log"; continue; }
        echo "=== $f" >> "$log"
        if ! TEST_NGINX_SERVROOT=$tree/t/servroot ./t/run.sh -v "$f" \
                > .suite.log 2>&1
        then
            cat .suite.log >> "$log"
            printf 'killed\t%s: %s\n' "$f" \
                "$(first_failure .suite.log "$f" "$tree")" > .result
            return
        fi
        tail -3 .suite.log >> "$log"
    done

    printf 'SURVIVED\t\n' > .result
}

if [ "${1:-}" = --one ]; then
    shift
    one "$@"
    exit 0
fi

check_only=
if [ "${1:-}" = --check ]; then
    check_only=1
    shift
fi

# the mutants asked for, or all of them
names=()
if [ $# -eq 0 ]; then
    for m in "$mutdir"/*.mutant; do
        [ -e "$m" ] && names+=("$(basename "$m" .mutant)")
    done
else
    for n in "$@"; do
        n=$(basename "$n" .mutant)
        [ -f "$mutdir/$n.mutant" ] || die "no mutant $mutdir/$n.mutant"
        names+=("$n")
    done
fi
[ ${#names[@]} -gt 0 ] || die "no mutants in $mutdir"

declare -A result by secs
stale=0
for n in "${names[@]}"; do
    if ! mutant_tool check "$mutdir/$n.mutant" "$root" > /dev/null; then
        result[$n]=STALE
        by[$n]="the original text must occur exactly once (see above)"
        secs[$n]=0
        stale=$((stale + 1))
    fi
done

if [ -n "$check_only" ]; then
    echo "mutants: ${#names[@]} checked, $stale stale"
    [ $stale -eq 0 ]
    exit $?
fi

logs=${MUTANT_LOGS:-$root/build/mutants}
mkdir -p "$logs" || die "cannot create $logs"
[ -f "$root/build/objs/Makefile" ] || die "no build/objs/Makefile: make build"
[ -d "$root/t/cert/out" ] || die "no t/cert/out: make certs"

work=$(mktemp -d "${TMPDIR:-/tmp}/timpush-mutants.XXXXXX") || die "mktemp"
trap 'rm -rf "$work"' EXIT

# A mutant runs under timeout(1), in a process group of its own that a ^C
# does not reach: stopping the harness stops it through timeout.
running=
stop() {
    if [ -n "$running" ]; then
        kill -TERM "$running" 2>/dev/null
        wait "$running"
    fi
    exit 130
}
trap stop INT TERM HUP
base=$work/base

echo "mutants: copying the working tree to $base"
mkdir -p "$base" || die "mkdir $base"
(cd "$root" && git ls-files -z -co --exclude-standard |
    while IFS= read -r -d '' f; do
        [ -e "$f" ] && printf '%s\0' "$f"
    done | tar --null -T - -cf - | tar -xpf - -C "$base") ||
    die "cannot copy the working tree"
mkdir -p "$base/t/cert" && cp -a "$root/t/cert/out" "$base/t/cert/" &&
    (cd "$root" && tar --exclude=build/mutants -cf - build) |
        tar -xpf - -C "$base" || die "cannot copy build/ and the certificates"
retarget_build "$root" "$base" || die "cannot retarget $base/build/objs/Makefile"
(cd "$base" && make build > "$logs/base-build.log" 2>&1) ||
    die "the unmutated tree does not build: $logs/base-build.log"

# whether a suite passes unmutated: 1 yes, 0 no; run once per file
declare -A base_ok
suite_passes_unmutated() {
    local f=$1
    if [ -z "${base_ok[$f]:-}" ]; then
        echo "mutants: checking that $f passes on the unmutated tree"
        if (cd "$base" && TEST_NGINX_SERVROOT=$base/t/servroot \
                ./t/run.sh "$f" > "$logs/base-$(basename "$f").log" 2>&1)
        then
            base_ok[$f]=1
        else
            base_ok[$f]=0
        fi
    fi
    [ "${base_ok[$f]}" = 1 ]
}

i=0
for n in "${names[@]}"; do
    i=$((i + 1))
    [ "${result[$n]:-}" = STALE ] && continue

    start=$(date +%s)
    tree=$work/m
    log=$logs/$n.log
    rm -rf "$tree"
    cp -a "$base" "$tree" && retarget_build "$base" "$tree" ||
        die "cannot copy $base"
    if ! info=$(mutant_tool apply "$mutdir/$n.mutant" "$tree"); then
        # the working tree changed since the check above
        result[$n]=STALE
        by[$n]="the original text must occur exactly once (see above)"
        secs[$n]=0
        continue
    fi
    hints=${info#*$'\t'}
    echo "mutant $n: ${info%%$'\t'*}, suites first: ${hints:-none}" > "$log"

    timeout -k 30 "$limit" "$mutdir/run.sh" --one "$n" "$tree" "$log" \
        "$hints" &
    running=$!
    wait "$running"
    status=$?
    running=
    if [ $status -eq 124 ] || [ $status -eq 137 ]; then
        result[$n]=killed
        by[$n]="the timeout: still running after $limit s"
    elif [ -f "$tree/.result" ]; then
        IFS=$'\t' read -r "result[$n]" "by[$n]" < "$tree/.result"
    else
        result[$n]=UNSURE
        by[$n]="the harness ended with status $status (see $log)"
    fi

    secs[$n]=$(( $(date +%s) - start ))

    # a suite that fails without the mutant proves nothing
    suite=${by[$n]%%:*}
    if [ "${result[$n]}" = killed ] && [ -e "$base/$suite" ] &&
        ! suite_passes_unmutated "$suite"
    then
        result[$n]=UNSURE
        by[$n]="$suite fails on the unmutated tree too (${logs}/base-$(basename "$suite").log)"
    fi

    rm -rf "$tree"
    echo "[$i/${#names[@]}] $n: ${result[$n]} ${by[$n]:+by ${by[$n]} }(${secs[$n]} s)"
done

{
    echo
    echo "| mutant | result | killed by | s |"
    echo "|---|---|---|--:|"
    for n in "${names[@]}"; do
        echo "| $n | ${result[$n]} | ${by[$n]//|/\\|} | ${secs[$n]} |"
    done
} | tee "$logs/table.md"

bad=0
for n in "${names[@]}"; do
    [ "${result[$n]}" = killed ] || bad=$((bad + 1))
done
echo
echo "mutants: ${#names[@]} run, $((${#names[@]} - bad)) killed, $bad not" \
     "(logs in $logs)"
[ $bad -eq 0 ]
