%% @doc Synod's hub from Erlang: start and stop processes across a BEAM
%% cluster, placed by a consistent hash ring, with results delivered to the
%% callers that wait for them; and leader watches on Raft groups.
%%
%% Thin: every function converts its arguments (options as a map or a
%% proplist) and calls the Elixir module `Synod' (`'Elixir.Synod''), which
%% decides everything; see its documentation and docs/hub.md for the rules.
%% Bad arguments raise `error({badarg, Message})' with a binary `Message' that
%% names the problem. Results are Elixir structs, which are maps in Erlang:
%% match `#{started := Started, errors := Errors}' and ignore the
%% `'__struct__'' key.
%%
%% ```
%% {ok, _} = synod:start([{name, workers}, {replication_factor, 1}]),
%% {ok, #{started := [{<<"user:1">>, _Node, Pid}]}} =
%%     synod:start_child(workers, #{id => <<"user:1">>, start => {my_worker, start_link, [1]}}),
%% Pid = synod:whereis(workers, <<"user:1">>),
%% {ok, _} = synod:stop_child(workers, <<"user:1">>).
%% '''
-module(synod).

-export([child_spec/1, start_link/1, start/1, stop/1, stop/2]).
-export([start_child/2, start_child/3, start_children/2, start_children/3]).
-export([stop_child/2, stop_child/3, stop_children/2, stop_children/3, await/1]).
-export([whereis/2, lookup/2, children/1, children/2, tagged/2, members/1, owners/2,
         is_partitioned/1]).
-export([subscribe/1, subscribe/2, unsubscribe/1, dispatch_event/3, dispatch_event/4,
         propagate_event/2, propagate_event/3]).
-export([leader/1, is_leader/1, term/1, add_leader_watch/3, add_leader_watch/4,
         remove_leader_watch/2]).
-export([status/0]).

-export_type([hub/0, child_id/0, child_spec/0, options/0, handle/0, start_result/0,
              stop_result/0]).

-define(HUB, 'Elixir.Synod').

-type hub() :: atom().
-type child_id() :: term().
%% A supervisor child spec map (`#{id := Id, start := {M, F, A}, ...}'), or
%% `{Module, Arg}', or `Module' (whose `child_spec/1' gives the map).
-type child_spec() :: supervisor:child_spec() | {module(), term()} | module().
%% A map or a proplist; a bare atom `A' in a proplist means `{A, true}'.
-type options() :: #{atom() => term()} | [{atom(), term()} | atom()].
%% What `[{await, false}]' returns: pass it to `await/1' in the same process.
-type handle() :: #{'__struct__' := 'Elixir.Synod.Handle', atom() => term()}.
%% `#{started := [{Id, Node, Pid}], errors := [{Id, Node, Reason}],
%% rolled_back := boolean()}'.
-type start_result() :: #{'__struct__' := 'Elixir.Synod.StartResult', atom() => term()}.
%% `#{stopped := [{Id, Node, Pid}], errors := [{Id, Node, Reason}]}'.
-type stop_result() :: #{'__struct__' := 'Elixir.Synod.StopResult', atom() => term()}.

%% -- running a hub ------------------------------------------------------------

%% @doc A child spec that runs the hub in your supervision tree; run the same
%% hub (same name, same options) on every node that should host its
%% children. Options: `name' (required), `replication_factor',
%% `replication_model', `migration', `handover_timeout', `partition_strategy',
%% `ring' (itself options: `vnodes', `seed'), `max_restarts', `max_seconds'
%% (see `Synod''s module doc). Options are checked now.
-spec child_spec(options()) -> supervisor:child_spec().
child_spec(Opts) ->
    synod_opts:call(?HUB, child_spec, [synod_opts:keyword(Opts, [ring])]).

%% @doc Starts the hub on this node, linked to the caller.
-spec start_link(options()) -> {ok, pid()} | {error, term()}.
start_link(Opts) ->
    synod_opts:call(?HUB, start_link, [synod_opts:keyword(Opts, [ring])]).

%% @doc Starts the hub on this node without a link: for the shell, scripts
%% and `erpc'. Applications use `child_spec/1'.
-spec start(options()) -> {ok, pid()} | {error, term()}.
start(Opts) ->
    synod_opts:call(?HUB, start, [synod_opts:keyword(Opts, [ring])]).

%% @equiv stop(Hub, infinity)
-spec stop(hub()) -> ok.
stop(Hub) ->
    stop(Hub, infinity).

%% @doc Stops the hub on this node: it leaves the membership and its children
%% restart on their new owners.
-spec stop(hub(), timeout()) -> ok.
stop(Hub, Timeout) ->
    ?HUB:stop(Hub, Timeout).

%% -- children -----------------------------------------------------------------

%% @equiv start_children(Hub, [Spec], [])
-spec start_child(hub(), child_spec()) ->
    {ok, start_result() | handle()} | {error, start_result() | term()}.
start_child(Hub, Spec) ->
    start_children(Hub, [Spec], []).

%% @equiv start_children(Hub, [Spec], Opts)
-spec start_child(hub(), child_spec(), options()) ->
    {ok, start_result() | handle()} | {error, start_result() | term()}.
start_child(Hub, Spec, Opts) ->
    start_children(Hub, [Spec], Opts).

%% @equiv start_children(Hub, Specs, [])
-spec start_children(hub(), [child_spec()]) ->
    {ok, start_result() | handle()} | {error, start_result() | term()}.
start_children(Hub, Specs) ->
    start_children(Hub, Specs, []).

%% @doc Starts `Specs' on their owners, one batched request per node.
%% Options: `await' (default `true'; `false' returns `{ok, Handle}' at once),
%% `timeout' (ms, default 5000), `on_failure' (`continue' or `rollback'),
%% `check_existing' (default `true'), `metadata' (a map; its `tag' is what
%% `tagged/2' finds). Returns `{ok, Result}' when every replica started,
%% `{error, Result}' when some did not, or, before anything is sent,
%% `{error, {invalid_children, _}}', `{error, {duplicate_ids, _}}',
%% `{error, {already_started, _}}', `{error, partitioned}' or
%% `{error, {unknown_hub, Hub}}'.
-spec start_children(hub(), [child_spec()], options()) ->
    {ok, start_result() | handle()} | {error, start_result() | term()}.
start_children(Hub, Specs, Opts) ->
    synod_opts:call(?HUB, start_children, [Hub, Specs, synod_opts:keyword(Opts)]).

%% @equiv stop_children(Hub, [Id], [])
-spec stop_child(hub(), child_id()) ->
    {ok, stop_result() | handle()} | {error, stop_result() | term()}.
stop_child(Hub, Id) ->
    stop_children(Hub, [Id], []).

%% @equiv stop_children(Hub, [Id], Opts)
-spec stop_child(hub(), child_id(), options()) ->
    {ok, stop_result() | handle()} | {error, stop_result() | term()}.
stop_child(Hub, Id, Opts) ->
    stop_children(Hub, [Id], Opts).

%% @equiv stop_children(Hub, Ids, [])
-spec stop_children(hub(), [child_id()]) ->
    {ok, stop_result() | handle()} | {error, stop_result() | term()}.
stop_children(Hub, Ids) ->
    stop_children(Hub, Ids, []).

%% @doc Stops every copy of each child. Options: `await' and `timeout' as in
%% `start_children/3'. Returns `{ok, Result}', or `{error, Result}' listing
%% `not_found' children and nodes that did not answer, or
%% `{error, {unknown_hub, Hub}}'.
-spec stop_children(hub(), [child_id()], options()) ->
    {ok, stop_result() | handle()} | {error, stop_result() | term()}.
stop_children(Hub, Ids, Opts) ->
    synod_opts:call(?HUB, stop_children, [Hub, Ids, synod_opts:keyword(Opts)]).

%% @doc Waits for the answers of a request made with `[{await, false}]', until
%% that request's own timeout. Only the process that made it may wait.
-spec await(handle()) -> {ok | error, start_result() | stop_result()}.
await(Handle) ->
    synod_opts:call(?HUB, await, [Handle]).

%% -- lookups ------------------------------------------------------------------

%% @doc The pid of `Id' (the first owner's copy when it runs), or
%% `undefined'. Answered from this node's registry.
-spec whereis(hub(), child_id()) -> pid() | undefined.
whereis(Hub, Id) ->
    synod_opts:undefined(synod_opts:call(?HUB, whereis, [Hub, Id])).

%% @doc Every running copy of `Id' as `{Node, Pid}'.
-spec lookup(hub(), child_id()) -> [{node(), pid()}].
lookup(Hub, Id) ->
    synod_opts:call(?HUB, lookup, [Hub, Id]).

%% @equiv children(Hub, global)
-spec children(hub()) -> [{child_id(), [{node(), pid()}]}].
children(Hub) ->
    children(Hub, global).

%% @doc The children this node's registry knows: `global' gives
%% `{Id, [{Node, Pid}]}' for every running child, `local' gives `{Id, Pid}'
%% for those running on this node.
-spec children(hub(), global | local) ->
    [{child_id(), [{node(), pid()}]}] | [{child_id(), pid()}].
children(Hub, Scope) ->
    synod_opts:call(?HUB, children, [Hub, Scope]).

%% @doc Children started with `#{tag => Tag}' in their metadata.
-spec tagged(hub(), term()) -> [{child_id(), [{node(), pid()}]}].
tagged(Hub, Tag) ->
    synod_opts:call(?HUB, tagged, [Hub, Tag]).

%% @doc The hub's members as this node sees them, sorted.
-spec members(hub()) -> [node()].
members(Hub) ->
    synod_opts:call(?HUB, members, [Hub]).

%% @doc The owners of `Id' under the current ring, first owner first.
-spec owners(hub(), child_id()) -> [node()].
owners(Hub, Id) ->
    synod_opts:call(?HUB, owners, [Hub, Id]).

%% @doc Whether this node's side is partitioned (with
%% `{partition_strategy, majority}').
-spec is_partitioned(hub()) -> boolean().
is_partitioned(Hub) ->
    synod_opts:call(?HUB, 'partitioned?', [Hub]).

%% -- events -------------------------------------------------------------------

%% @equiv subscribe(Hub, all)
-spec subscribe(hub()) -> ok.
subscribe(Hub) ->
    subscribe(Hub, all).

%% @doc Subscribes the caller to the hub's events on this node (`all' or a
%% list of event ids): each arrives as `{synod, Hub, EventId, Data}'. Events:
%% `children_started', `children_stopped', `children_migrated',
%% `member_joined', `member_left', `partitioned', `healed', and whatever
%% `dispatch_event/4' or `propagate_event/3' send.
-spec subscribe(hub(), all | [atom()]) -> ok.
subscribe(Hub, Events) ->
    synod_opts:call(?HUB, subscribe, [Hub, Events]).

%% @doc Ends the caller's subscription.
-spec unsubscribe(hub()) -> ok.
unsubscribe(Hub) ->
    synod_opts:call(?HUB, unsubscribe, [Hub]).

%% @equiv dispatch_event(Hub, EventId, Data, [])
-spec dispatch_event(hub(), atom(), term()) ->
    {ok, event_dispatched | event_queued | event_discarded}.
dispatch_event(Hub, EventId, Data) ->
    dispatch_event(Hub, EventId, Data, []).

%% @doc Puts the event on this node's event queue and sends it to the members
%% chosen by `members' (`local' by default, `global', `external' or a list
%% of nodes). `{ok, event_queued}' while the hub redistributes children;
%% with `{discard, true}', `{ok, event_discarded}' instead.
-spec dispatch_event(hub(), atom(), term(), options()) ->
    {ok, event_dispatched | event_queued | event_discarded}.
dispatch_event(Hub, EventId, Data, Opts) ->
    synod_opts:call('Elixir.Synod.Dispatcher', dispatch_event,
                    [Hub, EventId, Data, synod_opts:keyword(Opts)]).

%% @equiv propagate_event(Hub, Event, [])
-spec propagate_event(hub(), {atom(), term()}) -> ok.
propagate_event(Hub, Event) ->
    propagate_event(Hub, Event, []).

%% @doc Sends `{EventId, Data}' to the subscribers on the members chosen by
%% `members' (`global' by default).
-spec propagate_event(hub(), {atom(), term()}, options()) -> ok.
propagate_event(Hub, Event, Opts) ->
    synod_opts:call('Elixir.Synod.Dispatcher', propagate_event,
                    [Hub, Event, synod_opts:keyword(Opts)]).

%% -- status ------------------------------------------------------------------

%% @doc This node's view of every hub, Raft group, store and connected C
%% node, as a map (`'Elixir.Synod.Status':status/1' documents its keys; see
%% docs/observability.md). Bounded: a part that does not answer within a
%% second is `#{error => timeout}'; it never hangs.
-spec status() -> map().
status() -> 'Elixir.Synod.Status':status([]).

%% -- leader watches on Raft groups (see synod_raft) ---------------------------

%% @doc The leader of the Raft group `Group' as this node's member knows it,
%% or `undefined'. Answered locally.
-spec leader(atom()) -> node() | undefined.
leader(Group) ->
    synod_raft:leader(Group).

%% @doc Whether this node's member of `Group' leads it.
-spec is_leader(atom()) -> boolean().
is_leader(Group) ->
    synod_raft:is_leader(Group).

%% @doc The latest term this node's member of `Group' knows (0 without one).
-spec term(atom()) -> non_neg_integer().
term(Group) ->
    synod_raft:term(Group).

%% @equiv add_leader_watch(Group, Key, Target, all)
-spec add_leader_watch(atom(), term(), synod_raft:watch_target()) -> ok | {error, no_member}.
add_leader_watch(Group, Key, Target) ->
    add_leader_watch(Group, Key, Target, all).

%% @doc Watches this node's member of `Group' for leadership changes.
%% `Target' is a fun called as `Fun(Key, Event, Before, After)' or a pid
%% that receives `{synod_leader_watch, Group, Key, Event, Before, After}';
%% `Event' is `become_leader' or `become_follower', `Before' and `After' are
%% the member's view: `#{role, leader, term, commit, applied, voters}' maps
%% (`leader' is `nil' when none is known). `EventType' (`all', `become_leader',
%% `become_follower') filters. A watch under a key in use replaces it.
-spec add_leader_watch(atom(), term(), synod_raft:watch_target(),
                       all | synod_raft:watch_event()) -> ok | {error, no_member}.
add_leader_watch(Group, Key, Target, EventType) ->
    synod_raft:add_leader_watch(Group, Key, Target, EventType).

%% @doc Removes the leader watch under `Key'.
-spec remove_leader_watch(atom(), term()) -> ok | {error, no_member}.
remove_leader_watch(Group, Key) ->
    synod_raft:remove_leader_watch(Group, Key).
