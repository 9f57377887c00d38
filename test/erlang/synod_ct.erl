%% What the Common Test suites of test/erlang share: a cluster of peers with
%% Synod running, polling for a condition, and the error a remote call raised.
-module(synod_ct).

-include_lib("stdlib/include/assert.hrl").

-export([start_cluster/2, stop_cluster/1, wait_until/1, erpc_error/4, start_worker/1]).

%% Starts `Count' peers (long names on 127.0.0.1, random names, this VM's code
%% path and cookie) with Synod started on each: `{Peers, Nodes}'.
-spec start_cluster(pos_integer(), string()) -> {[{pid(), node()}], [node()]}.
start_cluster(Count, Prefix) ->
    Peers = 'Elixir.Synod.LocalCluster':start(Count, [{prefix, Prefix}]),
    {Peers, [Node || {_, Node} <- Peers]}.

-spec stop_cluster([{pid(), node()}]) -> ok.
stop_cluster(Peers) ->
    'Elixir.Synod.LocalCluster':stop(Peers).

%% Polls `Fun' until it returns true, for at most 30 s (slow machines too).
-spec wait_until(fun(() -> boolean())) -> ok.
wait_until(Fun) ->
    wait_until(Fun, 600).

wait_until(Fun, 0) ->
    ?assert(Fun());
wait_until(Fun, Tries) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(50), wait_until(Fun, Tries - 1)
    end.

%% The reason of the error `Module:Function(Args...)' raised on `Node'.
-spec erpc_error(node(), module(), atom(), [term()]) -> term().
erpc_error(Node, Module, Function, Args) ->
    try erpc:call(Node, Module, Function, Args) of
        Result -> error({no_error, Result})
    catch
        error:{exception, Reason, _Stacktrace} -> Reason
    end.

%% A hub child: a process that waits to be stopped.
-spec start_worker(term()) -> {ok, pid()}.
start_worker(_Id) ->
    {ok, spawn_link(fun() -> receive stop -> ok end end)}.
