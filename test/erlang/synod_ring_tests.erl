%% EUnit tests proving Erlang code can call Synod directly (rebar3 eunit).
-module(synod_ring_tests).

-include_lib("eunit/include/eunit.hrl").

members() -> ['a@127.0.0.1', 'b@127.0.0.1', 'c@127.0.0.1'].

lookup_is_a_member_test() ->
    Ring = synod_ring:new(members()),
    Owners = [synod_ring:lookup(Ring, integer_to_binary(I)) || I <- lists:seq(1, 1000)],
    ?assertEqual(lists:sort(members()), lists:usort(Owners)).

owners_are_distinct_and_start_with_owner_test() ->
    Ring = synod_ring:new(members(), #{vnodes => 64}),
    [First | _] = All = synod_ring:owners(Ring, <<"key">>, 5),
    ?assertEqual(3, length(All)),
    ?assertEqual(3, length(lists:usort(All))),
    ?assertEqual(synod_ring:lookup(Ring, <<"key">>), First).

order_does_not_matter_test() ->
    Keys = [<<I:64>> || I <- lists:seq(1, 2000)],
    A = synod_ring:new(members()),
    B = synod_ring:new(lists:reverse(members())),
    ?assertEqual(synod_ring:lookup_many(A, Keys), synod_ring:lookup_many(B, Keys)),
    ?assertEqual([], synod_ring:diff(A, B, Keys)).

%% The first vector of test/vectors/ring.txt, also checked by the C and
%% Elixir tests: the 3-member ring with the default seed and 1024 vnodes.
shared_vector_test() ->
    {ok, Text} = file:read_file(vectors_path()),
    Lines = binary:split(Text, <<"\n">>, [global, trim_all]),
    {Members, Keys} = first_ring(Lines),
    Ring = synod_ring:new(Members, [{vnodes, 1024}]),
    ?assert(length(Keys) > 50),
    [?assertEqual(binary_to_atom(Owner, utf8), synod_ring:lookup(Ring, Key)) || {Key, Owner} <- Keys].

bad_input_raises_badarg_with_a_reason_test() ->
    ?assertError({badarg, <<"the member list is empty">>}, synod_ring:new([])),
    ?assertError({badarg, <<"duplicate member: a">>}, synod_ring:new([a, b, a])),
    ?assertError({badarg, <<"a weight must be an integer in 1..1024">>}, synod_ring:new([{a, 0}])),
    ?assertError({badarg, <<"unknown option: {colour,red}">>}, synod_ring:new([a], [{colour, red}])),
    ?assertError({badarg, <<"a key must be a binary or an atom">>}, synod_ring:lookup(synod_ring:new([a]), 7)).

membership_changes_test() ->
    Keys = [<<I:64>> || I <- lists:seq(1, 5000)],
    Ring = synod_ring:new(members()),
    Bigger = synod_ring:add_member(Ring, 'd@127.0.0.1'),
    Moved = synod_ring:diff(Ring, Bigger, Keys),
    ?assert(length(Moved) > 0),
    ?assert(lists:all(fun({_, _, New}) -> New =:= 'd@127.0.0.1' end, Moved)),
    ?assertEqual([], synod_ring:diff(Ring, synod_ring:remove_member(Bigger, 'd@127.0.0.1'), Keys)).

vectors_path() ->
    Here = filename:dirname(code:which(?MODULE)),
    Candidates = [filename:join([Root, "test", "vectors", "ring.txt"])
                  || Root <- [".", os:getenv("REBAR_ROOT_DIR", "."), filename:join(Here, "../../../..")]],
    hd([P || P <- Candidates, filelib:is_regular(P)]).

first_ring([<<"#", _/binary>> | Rest]) -> first_ring(Rest);
first_ring([<<"ring ", _/binary>> | Rest]) -> collect(Rest, [], []).

collect([<<"end">> | _], Members, Keys) -> {lists:reverse(Members), lists:reverse(Keys)};
collect([Line | Rest], Members, Keys) ->
    case binary:split(Line, <<" ">>, [global]) of
        [<<"member">>, Name, _Weight] ->
            collect(Rest, [binary_to_atom(unhex(Name), utf8) | Members], Keys);
        [<<"key">>, Key, Owner, _Prefs] ->
            collect(Rest, Members, [{unhex(Key), unhex(Owner)} | Keys])
    end.

unhex(<<"-">>) -> <<>>;
unhex(Hex) -> binary:decode_hex(Hex).
