%% Common Test for the example: three real peer nodes run the application
%% (its hub and its store come up with it), sessions spread over them, a
%% session moves when its node stops, and settings survive in the store.
-module(synod_example_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([sessions_spread_over_the_cluster/1, settings_are_replicated/1,
         a_session_moves_when_its_node_leaves/1]).

all() ->
    [sessions_spread_over_the_cluster, settings_are_replicated,
     a_session_moves_when_its_node_leaves].

init_per_suite(Config) ->
    %% Synod.LocalCluster (from Synod): peers with this VM's code path.
    Peers = 'Elixir.Synod.LocalCluster':start(3, [{prefix, "example"}, {apps, []}]),
    Nodes = [Node || {_, Node} <- Peers],
    Root = ?config(priv_dir, Config),
    [begin
         ok = erpc:call(Node, application, load, [synod_example]),
         ok = erpc:call(Node, application, set_env, [synod_example, store_voters, Nodes]),
         ok = erpc:call(Node, application, set_env,
                        [synod_example, data_dir, filename:join(Root, atom_to_list(Node))]),
         {ok, _} = erpc:call(Node, application, ensure_all_started, [synod_example])
     end || Node <- Nodes],
    wait_until(fun() ->
                   lists:all(fun(N) -> erpc:call(N, synod, members, [synod_example:hub()])
                                           =:= lists:sort(Nodes) end, Nodes)
               end),
    [{peers, Peers}, {nodes, Nodes} | Config].

end_per_suite(Config) ->
    'Elixir.Synod.LocalCluster':stop(?config(peers, Config)).

sessions_spread_over_the_cluster(Config) ->
    [A, B, C] = ?config(nodes, Config),
    Users = [<<"user:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 12)],
    [{ok, _} = erpc:call(A, synod_example, start_session, [U]) || U <- Users],
    Homes = [erpc:call(B, synod_example, where, [U]) || U <- Users],
    ?assert(length(lists:usort(Homes)) > 1),
    wait_until(fun() -> erpc:call(C, synod_example, visit, [<<"user:1">>]) =/= {error, no_session} end),
    {ok, 2} = erpc:call(A, synod_example, visit, [<<"user:1">>]).

settings_are_replicated(Config) ->
    [A, B, C] = ?config(nodes, Config),
    wait_until(fun() -> erpc:call(A, synod_raft, leader, [synod_example:store()]) =/= undefined end),
    ok = erpc:call(A, synod_example, put_setting, [<<"theme">>, <<"dark">>]),
    {ok, <<"dark">>} = erpc:call(B, synod_example, get_setting, [<<"theme">>]),
    {ok, undefined} = erpc:call(C, synod_example, get_setting, [<<"font">>]).

a_session_moves_when_its_node_leaves(Config) ->
    [A | _] = Nodes = ?config(nodes, Config),
    Home = erpc:call(A, synod_example, where, [<<"user:1">>]),
    [Other | _] = Nodes -- [Home],
    ok = erpc:call(Home, application, stop, [synod_example]),
    wait_until(fun() ->
                   Where = erpc:call(Other, synod_example, where, [<<"user:1">>]),
                   Where =/= undefined andalso Where =/= Home
               end),
    {ok, 1} = erpc:call(Other, synod_example, visit, [<<"user:1">>]).

wait_until(Fun) ->
    wait_until(Fun, 600).

wait_until(Fun, 0) ->
    ?assert(Fun());
wait_until(Fun, Tries) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(50), wait_until(Fun, Tries - 1)
    end.
