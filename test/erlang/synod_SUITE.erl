%% Common Test: the hub (synod) and Raft groups (synod_raft) driven from
%% Erlang on three real peer nodes (OTP peer, real epmd, long names).
-module(synod_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1]).
-export([children_started_and_awaited/1, events_reach_subscribers/1, bad_arguments/1,
         the_c_node_dispatches_for_the_hub/1,
         commands_and_queries/1, leader_watch_with_a_fun/1]).
-import(synod_ct, [wait_until/1, erpc_error/4]).

-define(HUB, ct_hub).
-define(GROUP, ct_raft).

all() ->
    [{group, synod}, {group, synod_raft}].

groups() ->
    [{synod, [sequence], [children_started_and_awaited, events_reach_subscribers, bad_arguments,
                          the_c_node_dispatches_for_the_hub]},
     {synod_raft, [sequence], [commands_and_queries, leader_watch_with_a_fun]}].

init_per_suite(Config) ->
    {Peers, Nodes} = synod_ct:start_cluster(3, "ct_synod"),
    [{peers, Peers}, {nodes, Nodes} | Config].

end_per_suite(Config) ->
    synod_ct:stop_cluster(?config(peers, Config)).

%% -- synod --------------------------------------------------------------------

children_started_and_awaited(Config) ->
    Nodes = [A | _] = ?config(nodes, Config),
    [{ok, {ok, _}} = R || R <- erpc:multicall(Nodes, synod, start, [#{name => ?HUB, ring => #{vnodes => 256}}])],
    Sorted = lists:sort(Nodes),
    wait_until(fun() -> [{ok, Sorted}] =:= lists:usort(erpc:multicall(Nodes, synod, members, [?HUB])) end),

    Ids = [<<"job:", (integer_to_binary(I))/binary>> || I <- lists:seq(1, 30)],
    Specs = [#{id => Id, start => {synod_ct, start_worker, [Id]}} || Id <- Ids],
    {ok, #{started := Started, errors := []}} =
        erpc:call(A, fun() ->
                         {ok, Handle} = synod:start_children(?HUB, Specs, [{await, false}]),
                         synod:await(Handle)
                     end),
    ?assertEqual(lists:sort(Ids), lists:sort([Id || {Id, _, _} <- Started])),
    ?assert(length(lists:usort([Node || {_, Node, _} <- Started])) > 1),

    {<<"job:1">>, Node1, Pid1} = lists:keyfind(<<"job:1">>, 1, Started),
    wait_until(fun() -> erpc:call(A, synod, whereis, [?HUB, <<"job:1">>]) =:= Pid1 end),
    ?assertEqual([{Node1, Pid1}], erpc:call(A, synod, lookup, [?HUB, <<"job:1">>])),
    ?assertEqual([Node1], erpc:call(A, synod, owners, [?HUB, <<"job:1">>])),
    wait_until(fun() -> length(erpc:call(A, synod, children, [?HUB])) =:= 30 end),
    ?assertEqual({error, {already_started, [<<"job:1">>]}},
                 erpc:call(A, synod, start_child, [?HUB, hd(Specs)])),
    ?assertNot(erpc:call(A, synod, is_partitioned, [?HUB])),

    {ok, #{stopped := Stopped}} = erpc:call(A, synod, stop_children, [?HUB, Ids, #{timeout => 10000}]),
    ?assertEqual(30, length(Stopped)),
    wait_until(fun() -> erpc:call(A, synod, whereis, [?HUB, <<"job:1">>]) =:= undefined end),
    ?assertEqual({error, {unknown_hub, no_such_hub}},
                 erpc:call(A, synod, start_child, [no_such_hub, hd(Specs)])).

events_reach_subscribers(Config) ->
    [A | _] = ?config(nodes, Config),
    Spec = #{id => <<"evented">>, start => {synod_ct, start_worker, [<<"evented">>]}},
    Got = erpc:call(A, fun() ->
                           ok = synod:subscribe(?HUB, [children_started, greeting]),
                           {ok, _} = synod:start_child(?HUB, Spec),
                           {ok, event_dispatched} = synod:dispatch_event(?HUB, greeting, hello),
                           Started = receive {synod, ?HUB, children_started, S} -> S
                                     after 30000 -> timeout end,
                           Greeting = receive {synod, ?HUB, greeting, G} -> G
                                      after 30000 -> timeout end,
                           ok = synod:unsubscribe(?HUB),
                           {Started, Greeting}
                       end),
    {{_Node, [{<<"evented">>, Pid}]}, hello} = Got,
    ?assert(is_pid(Pid)),
    {ok, _} = erpc:call(A, synod, stop_child, [?HUB, <<"evented">>]).

bad_arguments(Config) ->
    [A | _] = ?config(nodes, Config),
    {badarg, Why} = erpc_error(A, synod, start_children, [?HUB, [], [{await, maybe}]]),
    ?assertMatch({_, _}, binary:match(Why, <<"await">>)),
    {badarg, _} = erpc_error(A, synod, start_children, [?HUB, [], not_options]),
    {badarg, _} = erpc_error(A, synod, start, [[{replication_factor, 2}]]),
    {badarg, _} = erpc_error(A, synod, whereis, [no_such_hub, <<"x">>]).

%% The C node rebar3 built (priv/synod_cnode), called with gen_server:call.
the_c_node_dispatches_for_the_hub(Config) ->
    Nodes = [A | _] = ?config(nodes, Config),
    Name = list_to_atom("ct_cnode_" ++ integer_to_list(erlang:unique_integer([positive]))
                        ++ "@127.0.0.1"),
    {ok, CNode} = 'Elixir.Synod.CNode':start_link([{name, Name}, {hub, ?HUB}, {connect, [A]}]),
    Request = {children_start, ?HUB, [{<<"from-c">>, {synod_ct, start_worker, [c]}, nil}], []},
    wait_until(fun() ->
                   case gen_server:call({synod_cnode, Name}, Request) of
                       {ok, [{<<"from-c">>, Node, {ok, Pid}}]} ->
                           lists:member(Node, Nodes) andalso node(Pid) =:= Node;
                       {error, _} ->
                           false
                   end
               end),
    wait_until(fun() -> is_pid(erpc:call(A, synod, whereis, [?HUB, <<"from-c">>])) end),
    {ok, _} = erpc:call(A, synod, stop_child, [?HUB, <<"from-c">>]),
    ok = 'Elixir.Synod.CNode':stop(CNode).

%% -- synod_raft ---------------------------------------------------------------

commands_and_queries(Config) ->
    Nodes = [A | _] = ?config(nodes, Config),
    DataRoot = filename:join(?config(priv_dir, Config), "raft"),
    ok = synod_raft:start_group(?GROUP, Nodes, DataRoot, [{machine, synod_ct_counter}]),
    Leader = settled_leader(A),
    ?assert(lists:member(Leader, Nodes)),
    ?assertEqual(Leader, erpc:call(A, synod, leader, [?GROUP])),
    ?assert(erpc:call(A, synod_raft, term, [?GROUP]) > 0),

    {ok, 5} = erpc:call(A, synod_raft, command, [?GROUP, {incr, apples, 5}]),
    {ok, 7} = erpc:call(A, synod_raft, command, [?GROUP, {incr, apples, 2}, #{timeout => 10000}]),
    {ok, 7} = erpc:call(A, synod_raft, query, [?GROUP, {synod_ct_counter, value, [apples]}]),
    {ok, 7} = erpc:call(A, synod_raft, query, [?GROUP, fun(S) -> maps:get(apples, S) end]),
    wait_until(fun() ->
                   {ok, 7} =:= erpc:call(Leader, synod_raft, query,
                                         [?GROUP, {synod_ct_counter, value, [apples]},
                                          [{consistency, stale}]])
               end),
    {badarg, _} = erpc_error(A, synod_raft, query, [?GROUP, {synod_ct_counter, value, [apples]},
                                                    #{consistency => sometimes}]),
    #{role := leader} = erpc:call(Leader, synod_raft, status, [?GROUP]).

leader_watch_with_a_fun(Config) ->
    Nodes = [A | _] = ?config(nodes, Config),
    Self = self(),
    Watch = fun(Key, Event, Before, After) -> Self ! {watched, node(), Key, Event, Before, After} end,
    [ok = erpc:call(N, synod, add_leader_watch, [?GROUP, ct_watch, Watch, become_leader]) || N <- Nodes],
    OldLeader = settled_leader(A),
    OldTerm = erpc:call(OldLeader, synod_raft, term, [?GROUP]),

    ok = erpc:call(OldLeader, synod_raft, stop_member, [?GROUP]),
    receive
        {watched, NewLeader, ct_watch, become_leader, Before, After} ->
            ?assertNotEqual(OldLeader, NewLeader),
            ?assertMatch(#{role := leader, leader := NewLeader}, After),
            ?assertNotEqual(leader, maps:get(role, Before)),
            ?assert(maps:get(term, After) > OldTerm)
    after 30000 ->
        ct:fail(no_leader_watch_event)
    end,
    Survivor = hd(Nodes -- [OldLeader]),
    ok = erpc:call(Survivor, synod_raft, remove_leader_watch, [?GROUP, ct_watch]),
    {ok, 8} = erpc:call(Survivor, synod_raft, command, [?GROUP, {incr, apples, 1}]).

%% The leader `Node' knows of, once that node confirms it leads.
settled_leader(Node) ->
    wait_until(fun() ->
                   Leader = erpc:call(Node, synod_raft, leader, [?GROUP]),
                   Leader =/= undefined andalso erpc:call(Leader, synod_raft, is_leader, [?GROUP])
               end),
    erpc:call(Node, synod_raft, leader, [?GROUP]).
