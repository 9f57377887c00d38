%% Common Test: the replicated store (synod_store) driven from Erlang on
%% three real peer nodes.
-module(synod_store_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([keys_and_transactions/1, leases_take_their_keys/1, watches_deliver_changes/1]).

-import(synod_ct, [wait_until/1, erpc_error/4]).

-define(STORE, ct_store).

all() ->
    [keys_and_transactions, leases_take_their_keys, watches_deliver_changes].

init_per_suite(Config) ->
    {Peers, Nodes = [A | _]} = synod_ct:start_cluster(3, "ct_store"),
    DataRoot = filename:join(?config(priv_dir, Config), "store"),
    ok = synod_store:start(?STORE, Nodes, DataRoot),
    wait_until(fun() -> erpc:call(A, synod_raft, leader, [?STORE]) =/= undefined end),
    [{peers, Peers}, {nodes, Nodes} | Config].

end_per_suite(Config) ->
    synod_ct:stop_cluster(?config(peers, Config)).

keys_and_transactions(Config) ->
    [A, B | _] = ?config(nodes, Config),
    {ok, Rev, undefined} = erpc:call(A, synod_store, put, [?STORE, <<"cfg/a">>, <<"1">>]),
    {ok, #{value := <<"1">>, mod_revision := Rev, version := 1}} =
        erpc:call(B, synod_store, get, [?STORE, <<"cfg/a">>]),
    {ok, Rev2, #{value := <<"1">>}} =
        erpc:call(A, synod_store, put, [?STORE, <<"cfg/a">>, <<"2">>, [prev_kv]]),
    ?assert(Rev2 > Rev),
    {ok, _, undefined} = erpc:call(A, synod_store, put, [?STORE, <<"cfg/b">>, <<"3">>]),
    {ok, undefined} = erpc:call(A, synod_store, get, [?STORE, <<"cfg/none">>]),
    {ok, [#{key := <<"cfg/a">>}, #{key := <<"cfg/b">>}], 2, false} =
        erpc:call(B, synod_store, range, [?STORE, <<"cfg/">>, #{prefix => true}]),

    %% compare-and-swap on the revision, as a transaction
    {ok, _, true, [_]} =
        erpc:call(A, synod_store, txn, [?STORE, [{mod_revision, <<"cfg/a">>, '==', Rev2}],
                                        [{put, <<"cfg/a">>, <<"4">>}]]),
    {ok, _, false, [{range, [#{value := <<"4">>}], 1, false}]} =
        erpc:call(A, synod_store, txn, [?STORE, [{mod_revision, <<"cfg/a">>, '==', Rev2}],
                                        [{put, <<"cfg/a">>, <<"5">>}],
                                        [{range, <<"cfg/a">>}]]),
    {ok, _, 2, []} = erpc:call(A, synod_store, delete, [?STORE, <<"cfg/">>, [prefix]]),
    {ok, Now} = erpc:call(B, synod_store, revision, [?STORE]),
    ?assert(Now > Rev2),
    {badarg, Why} = erpc_error(A, synod_store, put, [?STORE, <<>>, <<"v">>]),
    ?assert(is_binary(Why)).

leases_take_their_keys(Config) ->
    [A, B | _] = ?config(nodes, Config),
    {ok, Lease, 60000} = erpc:call(A, synod_store, grant, [?STORE, 60000]),
    {ok, _, undefined} =
        erpc:call(A, synod_store, put, [?STORE, <<"workers/a">>, <<"busy">>, #{lease => Lease}]),
    {ok, 60000} = erpc:call(B, synod_store, keep_alive, [?STORE, Lease]),
    {ok, Leases} = erpc:call(A, synod_store, leases, [?STORE]),
    {Lease, 60000, [<<"workers/a">>]} = lists:keyfind(Lease, 1, Leases),
    {ok, _} = erpc:call(B, synod_store, revoke, [?STORE, Lease]),
    {ok, undefined} = erpc:call(A, synod_store, get, [?STORE, <<"workers/a">>]),
    {error, lease_not_found} = erpc:call(A, synod_store, keep_alive, [?STORE, Lease]).

watches_deliver_changes(Config) ->
    [A, B | _] = ?config(nodes, Config),
    Self = self(),
    Watcher = spawn(A, fun() ->
                           {ok, Ref} = synod_store:watch(?STORE, <<"jobs/">>, [prefix]),
                           Self ! {watching, self()},
                           forward(Self, Ref)
                       end),
    receive {watching, Watcher} -> ok after 30000 -> ct:fail(no_watch) end,
    {ok, R1, _} = erpc:call(B, synod_store, put, [?STORE, <<"jobs/1">>, <<"new">>]),
    {ok, R2, 1, _} = erpc:call(B, synod_store, delete, [?STORE, <<"jobs/1">>]),
    ?assertEqual([{put, R1, <<"jobs/1">>}, {delete, R2, <<"jobs/1">>}], collect(2)),
    Watcher ! stop.

forward(To, Ref) ->
    receive
        {synod_watch, Ref, Events} when is_list(Events) ->
            [To ! {event, Kind, Rev, Key} || {Kind, Rev, #{key := Key}, _Prev} <- Events],
            forward(To, Ref);
        stop ->
            ok = synod_store:unwatch(?STORE, Ref)
    end.

collect(0) ->
    [];
collect(N) ->
    receive
        {event, Kind, Rev, Key} -> [{Kind, Rev, Key} | collect(N - 1)]
    after 30000 ->
        ct:fail({missing_events, N})
    end.
