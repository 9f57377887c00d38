%% EUnit: the conversions every Erlang face module of Synod shares
%% (synod_opts), and that they reach the Elixir side as it expects.
-module(synod_opts_tests).

-include_lib("eunit/include/eunit.hrl").

map_options_become_a_sorted_keyword_list_test() ->
    ?assertEqual([{await, false}, {timeout, 10}], synod_opts:keyword(#{timeout => 10, await => false})).

bare_atoms_in_a_proplist_mean_true_test() ->
    ?assertEqual([{prefix, true}, {limit, 3}], synod_opts:keyword([prefix, {limit, 3}])).

other_options_are_refused_by_name_test() ->
    ?assertError({badarg, <<"options must be a map or a proplist, got: 42">>}, synod_opts:keyword(42)).

nested_options_are_converted_where_named_test() ->
    ?assertEqual([{metadata, #{tag => t}}, {ring, [{vnodes, 64}]}],
                 synod_opts:keyword(#{ring => #{vnodes => 64}, metadata => #{tag => t}}, [ring])),
    ?assertEqual([{name, s}, {store, [{history, 10}]}],
                 synod_opts:member_keyword([{name, s}, {store, #{history => 10}}])).

malformed_entries_reach_the_elixir_check_test() ->
    ?assertEqual([{ring, [{vnodes, 64}]}, {a, b, c}], synod_opts:keyword([{ring, [{vnodes, 64}]}, {a, b, c}], [ring])),
    ?assertError({badarg, _}, synod:child_spec([{name, h}, {a, b, c}])).

a_data_dir_string_becomes_a_binary_test() ->
    ?assertEqual([{data_dir, <<"/var/lib/x">>}, {name, g}],
                 synod_opts:member_keyword(#{data_dir => "/var/lib/x", name => g})),
    ?assertEqual([{data_dir, <<"/d">>}], synod_opts:member_keyword([{data_dir, <<"/d">>}])).

elixir_argument_errors_become_badarg_with_the_message_test() ->
    ?assertError({badarg, <<"missing option name">>}, synod:child_spec([])),
    ?assertError({badarg, <<"missing option name">>}, synod:child_spec(#{})).

nil_and_undefined_convert_both_ways_test() ->
    ?assertEqual(undefined, synod_opts:undefined(nil)),
    ?assertEqual(nil, synod_opts:nil(undefined)),
    ?assertEqual(7, synod_opts:undefined(7)),
    ?assertEqual(7, synod_opts:nil(7)).

a_child_spec_from_erlang_starts_the_elixir_hub_test() ->
    #{id := {'Elixir.Synod', h}, start := {'Elixir.Synod', start_link, [[{name, h}]]}} =
        synod:child_spec(#{name => h}).
