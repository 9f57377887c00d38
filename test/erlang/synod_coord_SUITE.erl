%% Common Test: the coordination modules on a store (synod_election,
%% synod_lock, synod_values, synod_queue, synod_tasks) driven from Erlang on
%% three real peer nodes.
-module(synod_coord_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([ttl_election_with_a_claim_handler/1, lock_with_its_fencing_token/1,
         values_transform/1, queue_in_order_and_acknowledged/1,
         task_run_through_the_worker/1]).
-export([claimed/2, run_task/2]).

-import(synod_ct, [wait_until/1]).

-define(STORE, ct_coord).

all() ->
    [ttl_election_with_a_claim_handler, lock_with_its_fencing_token, values_transform,
     queue_in_order_and_acknowledged, task_run_through_the_worker].

init_per_suite(Config) ->
    {Peers, Nodes = [A | _]} = synod_ct:start_cluster(3, "ct_coord"),
    ok = synod_store:start(?STORE, Nodes, filename:join(?config(priv_dir, Config), "store")),
    wait_until(fun() -> erpc:call(A, synod_raft, leader, [?STORE]) =/= undefined end),
    [{peers, Peers}, {nodes, Nodes} | Config].

%% The wrappers follow the coordination vocabulary of issue 12 (store first,
%% ttl/timeout/call_timeout options), whose toolkit is Synod.Coord: until it
%% is merged, Election, Lock and Queue have their older signatures.
init_per_testcase(Case, Config) when Case =:= ttl_election_with_a_claim_handler;
                                     Case =:= lock_with_its_fencing_token;
                                     Case =:= queue_in_order_and_acknowledged ->
    case code:ensure_loaded('Elixir.Synod.Coord.Options') of
        {module, _} -> Config;
        {error, _} -> {skip, "needs the coordination vocabulary of issue 12 (Synod.Coord)"}
    end;
init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

end_per_suite(Config) ->
    synod_ct:stop_cluster(?config(peers, Config)).

%% -- synod_election -----------------------------------------------------------

ttl_election_with_a_claim_handler(Config) ->
    [A, B | _] = ?config(nodes, Config),
    Self = self(),
    Handlers = [{?MODULE, claimed, [Self]}],
    Candidate = fun(Id) ->
                    fun() ->
                        {ok, C} = synod_election:candidate(?STORE, ct_election, Id,
                                                           #{ttl => 1000, handlers => Handlers}),
                        {synod_election:start(C), C}
                    end
                end,
    {HolderA, {{ok, leader}, CA}} = hold(A, Candidate(<<"a">>)),
    #{candidate_id := <<"a">>, token := TokenA} = receive_claim(),
    ?assert(erpc:call(A, synod_election, is_leader, [CA])),
    {ok, <<"a">>} = erpc:call(B, synod_election, leader, [?STORE, ct_election]),
    {ok, #{leader_id := <<"a">>, revision := TokenA}} =
        erpc:call(B, synod_election, get, [?STORE, ct_election]),

    {HolderB, {{ok, follower}, CB}} = hold(B, Candidate(<<"b">>)),
    ?assertNot(erpc:call(B, synod_election, is_leader, [CB])),
    ok = erpc:call(A, synod_election, stop, [CA]),
    #{candidate_id := <<"b">>, token := TokenB} = receive_claim(),
    ?assert(TokenB > TokenA),
    wait_until(fun() -> erpc:call(B, synod_election, is_leader, [CB]) end),
    ?assertNot(erpc:call(A, synod_election, is_leader, [CA])),
    [H ! stop || H <- [HolderA, HolderB]].

%% The claim handler: runs on the candidate's node on every new leadership.
claimed(Claim, Test) ->
    Test ! {claimed, Claim}.

receive_claim() ->
    receive {claimed, Claim} -> Claim after 30000 -> ct:fail(no_claim) end.

%% -- synod_lock ---------------------------------------------------------------

lock_with_its_fencing_token(Config) ->
    [A, B | _] = ?config(nodes, Config),
    Key = <<"ct/resource">>,
    {ok, T1} = erpc:call(A, synod_lock, lock, [?STORE, Key, fun(Token) -> Token end]),
    {ok, T2} = erpc:call(B, synod_lock, lock, [?STORE, Key, fun(Token) -> Token end,
                                               #{ttl => 2000, timeout => 10000}]),
    ?assert(T2 > T1),
    Self = self(),
    Holder = spawn(A, fun() ->
                          synod_lock:lock(?STORE, Key, fun(Token) ->
                                                               Self ! {holding, Token},
                                                               receive release -> held end
                                                       end)
                      end),
    T3 = receive {holding, T} -> T after 30000 -> ct:fail(no_lock) end,
    ?assert(T3 > T2),
    {error, locked} = erpc:call(B, synod_lock, try_lock, [?STORE, Key, fun() -> never end]),
    Holder ! release,
    wait_until(fun() ->
                   case erpc:call(B, synod_lock, try_lock, [?STORE, Key, fun() -> done end]) of
                       {ok, T4, done} -> T4 > T3;
                       {error, locked} -> false
                   end
               end).

%% -- synod_values -------------------------------------------------------------

values_transform(Config) ->
    [A, B | _] = ?config(nodes, Config),
    Incr = fun(undefined) -> 1; (N) -> N + 1 end,
    {ok, 1} = erpc:call(A, synod_values, transform, [?STORE, <<"ct/counter">>, Incr]),
    {ok, 2} = erpc:call(B, synod_values, transform, [?STORE, <<"ct/counter">>, Incr]),
    {ok, 3} = erpc:call(A, synod_values, try_transform, [?STORE, <<"ct/counter">>, Incr]),
    {ok, #{<<"ct/counter">> := 3}} = erpc:call(B, synod_values, get_values, [?STORE, <<"ct/counter">>]).

%% -- synod_queue --------------------------------------------------------------

queue_in_order_and_acknowledged(Config) ->
    [A, B, C] = ?config(nodes, Config),
    Q = <<"ct-queue">>,
    %% Values are decoded with [safe] (no atoms made from stored data): an
    %% atom the consuming node does not know would come back undecodable,
    %% so these terms hold none of their own.
    [{ok, _, _} = erpc:call(B, synod_queue, enqueue, [?STORE, Q, {<<"job">>, I}]) || I <- [1, 2, 3]],
    {ok, 3} = erpc:call(A, synod_queue, count, [?STORE, Q]),
    {ok, #{value := {<<"job">>, 1}}} = erpc:call(A, synod_queue, dequeue, [?STORE, Q]),
    {ok, #{value := {<<"job">>, 2}, receipt := Receipt}} =
        erpc:call(C, synod_queue, dequeue, [?STORE, Q, #{visibility_timeout => 30000}]),
    ok = erpc:call(C, synod_queue, ack, [?STORE, Q, Receipt]),
    {ok, #{value := {<<"job">>, 3}}} =
        erpc:call(A, synod_queue, dequeue, [?STORE, Q, [{timeout, 0}]]),
    {error, empty} = erpc:call(A, synod_queue, dequeue, [?STORE, Q, #{timeout => 0}]).

%% -- synod_tasks --------------------------------------------------------------

task_run_through_the_worker(Config) ->
    [A, B | _] = ?config(nodes, Config),
    Ids = [<<"ct-task-", (integer_to_binary(I))/binary>> || I <- [1, 2, 3]],
    [{ok, #{status := starting}} =
         erpc:call(B, synod_tasks, create_task, [?STORE, #{topic => <<"ct">>, id => Id, data => I}])
     || {I, Id} <- lists:enumerate(Ids)],
    Self = self(),
    Worker = fun() ->
                 synod_tasks:start_worker_link(#{store => ?STORE, topic => <<"ct">>,
                                                 'fun' => {?MODULE, run_task, [Self]}})
             end,
    {Holder, {ok, _Pid}} = hold(A, Worker),
    Ran = [receive {ran, Id} -> Id after 30000 -> ct:fail(task_not_run) end || _ <- Ids],
    ?assertEqual(Ids, lists:sort(Ran)),
    Terminated = fun(Id) ->
                     {ok, #{status := S}} = erpc:call(B, synod_tasks, task, [?STORE, Id]),
                     S =:= terminated
                 end,
    wait_until(fun() -> lists:all(Terminated, Ids) end),
    Holder ! stop.

%% The worker's function: runs on the worker's node, once per task.
run_task(#{id := Id}, Test) ->
    Test ! {ran, Id},
    ok.

%% -- helpers ------------------------------------------------------------------

%% Runs `Start' in a process on `Node' that lives until it is sent `stop'
%% (candidates and workers are linked to the process that made them):
%% `{HolderPid, Start()}'.
hold(Node, Start) ->
    Self = self(),
    Holder = spawn(Node, fun() ->
                             Self ! {held, self(), Start()},
                             receive stop -> ok end
                         end),
    receive {held, Holder, Result} -> {Holder, Result} after 30000 -> ct:fail(no_start) end.
