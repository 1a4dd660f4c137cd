# The IM display rules end to end: the seed guide's examples and the APNs
# headers, read back from what the simulator received.  The rules one by
# one are unit-tested in t/unit/render.t.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', ($block->http_config // '')
                                     . Timpush::Push::simulator());
    $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    # each block starts with an empty simulator log and ends with it
    # holding exactly what its answers said was sent
    $block->set_value('init', "Timpush::Push::clear_log();\n"
        . "\$Timpush::Push::rendered = 0;\n" . $block->init
        . "Test::More::is(scalar \@{Timpush::Push::mock_log()},\n"
        . "    \$Timpush::Push::rendered, 'the simulator got nothing else');\n");
    $block->set_value('request', "GET /mock/log?token=00000000000000000000\n");
    $block->set_value('response_body', qq{{"notifications":[]}\n});
    $block->set_value('no_error_log', "[error]\n");
});

# push $msg to a fresh user of business_id 1001 (or $biz); returns the
# answer and the notification the simulator received (undef if none),
# checking that the simulator received exactly what the answer says
$Timpush::Push::rendered = 0;
sub Timpush::Push::render {
    my ($user, $msg, $biz) = @_;
    my $t = unpack 'H*', pack 'N8', map { int rand 2**32 } 1 .. 8;
    Timpush::Push::register($user, $t, $biz // 1001);
    $msg->{to} = $user;
    my ($status, $res) = Timpush::Push::push_message($msg);
    my $log = Timpush::Push::mock_log($t);
    my $sent = $res->{sent} // 0;
    Test::More::is(scalar @$log, $sent, "$user: $sent notification(s) at the "
                                        . 'simulator, as answered');
    $Timpush::Push::rendered += @$log;
    return ($res, $log->[0]);
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: Denny to Vinson, a text with ext "jump to denny": "Nickname: Content", ext at the top
--- init
my ($res, $n) = Timpush::Push::render('vinson1', {
    from => { user_id => 'denny', nickname => 'Denny' },
    elems => [{ type => 'text', text => 'Text message' }],
    offline_push => { ext => 'jump to denny' } });
Test::More::is_deeply($n->{payload}, {
    aps => { alert => 'Denny: Text message', badge => 1, sound => 'default' },
    ext => 'jump to denny' }, 'the payload');
Test::More::is($n->{headers}{'apns-push-type'}, 'alert', 'apns-push-type');
Test::More::is($n->{headers}{'apns-priority'}, '10', 'apns-priority');



=== TEST 2: a group message from a member with a name card: "Name card (Group name): Content"
--- init
my ($res, $n) = Timpush::Push::render('g1', {
    from => { user_id => 'denny', nickname => 'Denny', name_card => 'Den' },
    group => { id => 'g1', name => 'Team' },
    elems => [{ type => 'text', text => 'lunch?' }] });
Test::More::is($n->{payload}{aps}{alert}, 'Den (Team): lunch?', 'name card');
($res, $n) = Timpush::Push::render('g2', {
    from => { user_id => 'denny', nickname => 'Denny' },
    group => { id => 'g1', name => 'Team' },
    elems => [{ type => 'text', text => 'lunch?' }] });
Test::More::is($n->{payload}{aps}{alert}, 'Denny (Team): lunch?',
               'no name card: the nickname');
($res, $n) = Timpush::Push::render('g3', {
    from => { user_id => 'denny' }, group => { id => 'g1', name => 'Team' },
    elems => [{ type => 'text', text => 'lunch?' }] });
Test::More::is($n->{payload}{aps}{alert}, '(Team): lunch?', 'no name');
($res, $n) = Timpush::Push::render('g4', {
    from => { user_id => 'denny', nickname => 'Denny' }, group => { id => 'g1' },
    elems => [{ type => 'text', text => 'lunch?' }] });
Test::More::is($n->{payload}{aps}{alert}, 'Denny: lunch?', 'no group name');



=== TEST 3: an image, and every element type joined in order
--- init
my ($res, $n) = Timpush::Push::render('img', {
    from => { nickname => 'Denny' }, elems => [{ type => 'image' }] });
Test::More::is($n->{payload}{aps}{alert}, 'Denny: [image]', 'an image');
($res, $n) = Timpush::Push::render('all', {
    elems => [{ type => 'text', text => 'a' }, { type => 'audio' },
              { type => 'file' }, { type => 'image' }, { type => 'video' },
              { type => 'location', desc => 'here' }, { type => 'face' },
              { type => 'custom', desc => 'D', data => 'never' }] });
Test::More::is($n->{payload}{aps}{alert},
               'a[audio][file][image][video][location][face]D',
               'no nickname: just the content, elements joined');
Test::More::unlike(JSON::PP::encode_json($n->{payload}), qr/never/,
                   'custom data is never pushed');



=== TEST 4: a custom message: without desc nothing is pushed; with desc, the desc
--- init
my ($res, $n) = Timpush::Push::render('cust1', {
    from => { nickname => 'Denny' },
    elems => [{ type => 'custom', data => '{"order":1}' }] });
Test::More::is($res->{pushed}, JSON::PP::false, 'not pushed');
Test::More::is($res->{reason}, 'no_content', 'reason no_content');
Test::More::ok(!$n, 'nothing reached the simulator');
($res, $n) = Timpush::Push::render('cust2', {
    from => { nickname => 'Denny' },
    elems => [{ type => 'custom', data => '{"order":1}', desc => 'New order' }] });
Test::More::is($n->{payload}{aps}{alert}, 'Denny: New order', 'its desc');
($res, $n) = Timpush::Push::render('cust3', {
    elems => [{ type => 'custom', data => 'x' }],
    offline_push => { desc => 'Something happened' } });
Test::More::is($n->{payload}{aps}{alert}, 'Something happened',
               'offline_push.desc');



=== TEST 5: title "Harvy" with desc "You have a call invitation.": {title, body}
--- init
my ($res, $n) = Timpush::Push::render('harvy', {
    from => { nickname => 'Harvy' },
    elems => [{ type => 'custom', data => 'call' }],
    offline_push => { title => 'Harvy',
                      desc => 'You have a call invitation.' } });
Test::More::is_deeply($n->{payload}{aps}{alert},
    { title => 'Harvy', body => 'You have a call invitation.' }, 'alert');



=== TEST 6: disable and online_user_only: nothing pushed, and why
--- init
my ($res, $n) = Timpush::Push::render('dis', {
    elems => [{ type => 'text', text => 'x' }],
    offline_push => { disable => JSON::PP::true } });
Test::More::is($res->{reason}, 'disabled', 'disabled');
Test::More::ok(!$n, 'disabled: nothing sent');
($res, $n) = Timpush::Push::render('onl', {
    elems => [{ type => 'text', text => 'x' }],
    online_user_only => JSON::PP::true });
Test::More::is($res->{reason}, 'online_only', 'online_only');
Test::More::ok(!$n, 'online_only: nothing sent');



=== TEST 7: sound, badge, ignore_badge, image, flags and aps keys
--- init
my ($res, $n) = Timpush::Push::render('snd', {
    elems => [{ type => 'text', text => 'x' }],
    offline_push => { sound => 'push.no_sound', ignore_badge => JSON::PP::true,
                      image => 'https://example.com/a.png',
                      interruption_level => 'time-sensitive',
                      category => 'MSG', thread_id => 't1' } });
my $aps = $n->{payload}{aps};
Test::More::ok(!exists $aps->{sound}, 'push.no_sound: no sound');
Test::More::ok(!exists $aps->{badge}, 'ignore_badge: no badge');
Test::More::ok(!exists $res->{results}[0]{badge}, 'and none in the answer');
Test::More::is($n->{payload}{image}, 'https://example.com/a.png', 'image');
Test::More::is($aps->{'mutable-content'}, 1, 'image: mutable-content');
Test::More::is($aps->{'interruption-level'}, 'time-sensitive', 'level');
Test::More::is($aps->{category}, 'MSG', 'category');
Test::More::is($aps->{'thread-id'}, 't1', 'thread-id');
($res, $n) = Timpush::Push::render('snd2', {
    elems => [{ type => 'text', text => 'x' }],
    offline_push => { sound => 'phone_ringing.mp3' } });
Test::More::is($n->{payload}{aps}{sound}, 'phone_ringing.mp3', 'a file');



=== TEST 8: headers: priority, expiration, collapse id, VoIP topic and push type
--- init
my ($res, $n) = Timpush::Push::render('hdr', {
    elems => [{ type => 'text', text => 'x' }], priority => 'normal',
    expiration => 1767225600,
    offline_push => { collapse_id => 'c' x 64 } });
my $h = $n->{headers};
Test::More::is($h->{'apns-priority'}, '5', 'normal: 5');
Test::More::is($h->{'apns-expiration'}, '1767225600', 'apns-expiration');
Test::More::is($h->{'apns-collapse-id'}, 'c' x 64, 'apns-collapse-id');
($res, $n) = Timpush::Push::render('voip', {
    elems => [{ type => 'text', text => 'call' }],
    offline_push => { voip => JSON::PP::true } }, 2001);
Test::More::is($n->{headers}{'apns-topic'}, 'com.example.chat.voip',
               'VoIP: the .voip topic');
Test::More::is($n->{headers}{'apns-push-type'}, 'voip', 'VoIP: push type');
($res, $n) = Timpush::Push::render('bg', {
    elems => [{ type => 'custom', data => 'x' }],
    offline_push => { content_available => JSON::PP::true } });
Test::More::is_deeply($n->{payload}, { aps => { 'content-available' => 1 } },
                      'background: content-available only');
Test::More::is($n->{headers}{'apns-push-type'}, 'background',
               'background: push type');
Test::More::is($n->{headers}{'apns-priority'}, '5', 'background: priority 5');
Test::More::ok(!exists $res->{results}[0]{badge}, 'background: no badge');



=== TEST 9: a body too long is cut at a character boundary and ends with "…", to the byte
--- init
# {"aps":{"alert":"Denny: <cut>…","badge":<room for 10 digits>,
# "sound":"default"}}: 67 bytes around the cut text, 4096 in all
my ($res, $n) = Timpush::Push::render('long', {
    from => { nickname => 'Denny' },
    elems => [{ type => 'text', text => "\x{1F600}" x 2000 }] });
Test::More::is($res->{sent}, 1, 'sent');
my $alert = $n->{payload}{aps}{alert};
Test::More::like($alert, qr/^Denny: (?:\x{1F600})+\x{2026}\z/,
                 'whole emoji, then the ellipsis');
Test::More::is(length $alert, 7 + 1007 + 1,
               'as many emoji as fit: 1007 (4028 of 4029 bytes)');
($res, $n) = Timpush::Push::render('long2', {
    from => { nickname => 'Denny' },
    elems => [{ type => 'text', text => 'x' x 5000 }] });
$alert = $n->{payload}{aps}{alert};
Test::More::like($alert, qr/^Denny: x+\x{2026}\z/, 'ASCII: cut, then the ellipsis');
Test::More::is(length $alert, 7 + 4029 + 1,
               'ASCII: 4029 bytes kept, the payload with a 10-digit badge 4096');
my $status;
($status, $res) = Timpush::Push::push_message({ to => 'long',
    elems => [{ type => 'text', text => 'x' }],
    offline_push => { ext => 'e' x 5000 } });
Test::More::is($status, 413, 'ext alone too big: 413');
Test::More::is($res->{error}{code}, 'payload_too_large', 'payload_too_large');



=== TEST 10: validation: the answer names the field, nothing is sent
--- init
for my $case (
    [ { to => [], elems => [{ type => 'text', text => 'x' }] }, qr/^to: / ],
    [ { to => 'u', elems => [{ type => 'sticker' }] }, qr/^elems\[0\]\.type: / ],
    [ { to => 'u', elems => [{ type => 'text', text => 5 }] },
      qr/^elems\[0\]\.text: / ],
    [ { to => 'u', elems => [{ type => 'text', text => 'x' }],
        priority => 'urgent' }, qr/^priority: / ],
    [ { to => 'u', elems => [{ type => 'text', text => 'x' }],
        offline_push => { interruption_level => 'loud' } },
      qr/^offline_push\.interruption_level: / ],
    [ { to => 'u', elems => [{ type => 'text', text => 'x' }],
        offline_push => { collapse_id => 'c' x 65 } },
      qr/^offline_push\.collapse_id: / ],
) {
    my ($status, $res) = Timpush::Push::push_message($case->[0]);
    Test::More::is($status, 400, "400 for $case->[1]");
    Test::More::is($res->{error}{code}, 'invalid_field', "invalid_field");
    Test::More::like($res->{error}{message}, $case->[1], "names the field");
}
