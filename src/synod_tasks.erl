%% @doc The task store with leases from Erlang: tasks created under a topic,
%% reserved by workers under a store lease, kept alive, snoozed, failed or
%% terminated, following one status machine; and the worker that runs them.
%%
%% Thin: every function converts its arguments and calls `Synod.Tasks' or
%% `Synod.Tasks.Worker' (`'Elixir.Synod.Tasks''); see their documentation and
%% docs/coordination.md. The store comes first. A task is a map
%% (`#{id, topic, status, data, ...}') and may be passed as its id. An owner
%% is the pid holding a task's lease, or `undefined' for a task nobody holds.
%% Options (a map or a proplist): `timeout' (in total, ms), `call_timeout'
%% (each store round trip, ms), and `ttl' (a reservation's lease, ms).
%%
%% ```
%% {ok, _} = synod_tasks:create_task(jobs, #{topic => <<"mail">>, data => #{to => <<"a@b">>}}),
%% {ok, _Worker} = synod_tasks:start_worker_link(#{store => jobs, topic => <<"mail">>,
%%                                                 'fun' => {my_mail, send, []}}).
%% '''
-module(synod_tasks).

-export([transitions/0, create_task/2, create_task/3, create_tasks/2, create_tasks/3]).
-export([reserve_task/3, reserve_task/4, extend_lease/3, extend_lease/4, snooze/4, snooze/5,
         fail/4, fail/5, terminate/3, terminate/4, revoke_lease/3, revoke_lease/4]).
-export([task/2, task/3, tasks/2, tasks/3, list_tasks/1, list_tasks/2, list_tasks/3,
         list_tasks/4, list_leased_tasks/2, list_leased_tasks/3, list_leased_tasks/4]).
-export([worker_child_spec/1, start_worker_link/1, current_task/1]).

-export_type([task/0, task_ref/0, cursor/0]).

-define(TASKS, 'Elixir.Synod.Tasks').
-define(WORKER, 'Elixir.Synod.Tasks.Worker').

-type task() :: #{'__struct__' := 'Elixir.Synod.Tasks.Task', atom() => term()}.
-type task_ref() :: binary() | task().
%% `#{limit => N}' to start a listing, then the cursor a page returned;
%% `undefined' after the last page.
-type cursor() :: map() | undefined.

%% @doc The allowed status transitions: each status and those it may go to.
-spec transitions() -> #{atom() => [atom()]}.
transitions() ->
    ?TASKS:transitions().

%% -- creating -----------------------------------------------------------------

%% @equiv create_task(Store, Attrs, [])
-spec create_task(synod_store:store(), map() | list()) -> {ok, task()} | {error, term()}.
create_task(Store, Attrs) ->
    create_task(Store, Attrs, []).

%% @doc Creates a task in status `starting'. `Attrs' (a map or a proplist):
%% `topic' (required), `id', `group_id', `sub_topic', `data'.
%% `{error, already_exists}' if the id is taken.
-spec create_task(synod_store:store(), map() | list(), synod:options()) ->
    {ok, task()} | {error, term()}.
create_task(Store, Attrs, Opts) ->
    synod_opts:call(?TASKS, create_task, [Store, Attrs, synod_opts:keyword(Opts)]).

%% @equiv create_tasks(Store, AttrsList, [])
-spec create_tasks(synod_store:store(), [map() | list()]) -> {ok, [task()]} | {error, term()}.
create_tasks(Store, AttrsList) ->
    create_tasks(Store, AttrsList, []).

%% @doc Creates several tasks, all or none.
-spec create_tasks(synod_store:store(), [map() | list()], synod:options()) ->
    {ok, [task()]} | {error, term()}.
create_tasks(Store, AttrsList, Opts) ->
    synod_opts:call(?TASKS, create_tasks, [Store, AttrsList, synod_opts:keyword(Opts)]).

%% -- reserving and changing ---------------------------------------------------

%% @equiv reserve_task(Store, Topic, Pid, [])
-spec reserve_task(synod_store:store(), binary(), pid()) ->
    {ok, task() | undefined} | {error, term()}.
reserve_task(Store, Topic, Pid) ->
    reserve_task(Store, Topic, Pid, []).

%% @doc Leases the oldest reservable task of `Topic' to `Pid': the task,
%% now `running', or `undefined' when there is none (within `timeout').
-spec reserve_task(synod_store:store(), binary(), pid(), synod:options()) ->
    {ok, task() | undefined} | {error, term()}.
reserve_task(Store, Topic, Pid, Opts) ->
    case synod_opts:call(?TASKS, reserve_task, [Store, Topic, Pid, synod_opts:keyword(Opts)]) of
        {ok, Task} -> {ok, synod_opts:undefined(Task)};
        Error -> Error
    end.

%% @equiv extend_lease(Store, Task, Pid, [])
-spec extend_lease(synod_store:store(), task_ref(), pid()) -> {ok, task()} | {error, term()}.
extend_lease(Store, Task, Pid) ->
    extend_lease(Store, Task, Pid, []).

%% @doc Restarts the countdown of the task's lease for its owner `Pid'.
-spec extend_lease(synod_store:store(), task_ref(), pid(), synod:options()) ->
    {ok, task()} | {error, term()}.
extend_lease(Store, Task, Pid, Opts) ->
    synod_opts:call(?TASKS, extend_lease, [Store, Task, Pid, synod_opts:keyword(Opts)]).

%% @equiv snooze(Store, Task, Owner, Ms, [])
-spec snooze(synod_store:store(), task_ref(), pid() | undefined, pos_integer()) ->
    {ok, task()} | {error, term()}.
snooze(Store, Task, Owner, Ms) ->
    snooze(Store, Task, Owner, Ms, []).

%% @doc Snoozes a running task for `Ms': reservable again afterwards.
-spec snooze(synod_store:store(), task_ref(), pid() | undefined, pos_integer(),
             synod:options()) -> {ok, task()} | {error, term()}.
snooze(Store, Task, Owner, Ms, Opts) ->
    synod_opts:call(?TASKS, snooze,
                    [Store, Task, synod_opts:nil(Owner), Ms, synod_opts:keyword(Opts)]).

%% @equiv fail(Store, Task, Owner, Error, [])
-spec fail(synod_store:store(), task_ref(), pid() | undefined, term()) ->
    {ok, task()} | {error, term()}.
fail(Store, Task, Owner, Error) ->
    fail(Store, Task, Owner, Error, []).

%% @doc Fails the task with `Error' (any term): final.
-spec fail(synod_store:store(), task_ref(), pid() | undefined, term(), synod:options()) ->
    {ok, task()} | {error, term()}.
fail(Store, Task, Owner, Error, Opts) ->
    synod_opts:call(?TASKS, fail,
                    [Store, Task, synod_opts:nil(Owner), Error, synod_opts:keyword(Opts)]).

%% @equiv terminate(Store, Task, Owner, [])
-spec terminate(synod_store:store(), task_ref(), pid() | undefined) ->
    {ok, task()} | {error, term()}.
terminate(Store, Task, Owner) ->
    terminate(Store, Task, Owner, []).

%% @doc Terminates (completes) the task: final. With `Owner' `undefined' it
%% cancels a task nobody holds.
-spec terminate(synod_store:store(), task_ref(), pid() | undefined, synod:options()) ->
    {ok, task()} | {error, term()}.
terminate(Store, Task, Owner, Opts) ->
    synod_opts:call(?TASKS, terminate,
                    [Store, Task, synod_opts:nil(Owner), synod_opts:keyword(Opts)]).

%% @equiv revoke_lease(Store, Task, RecordVer, [])
-spec revoke_lease(synod_store:store(), task_ref(), non_neg_integer()) ->
    {ok, task()} | {error, term()}.
revoke_lease(Store, Task, RecordVer) ->
    revoke_lease(Store, Task, RecordVer, []).

%% @doc Ends the lease (or snooze) of a task now, if its record is still at
%% `RecordVer' (else `{error, record_changed}'): the operator's lever.
-spec revoke_lease(synod_store:store(), task_ref(), non_neg_integer(), synod:options()) ->
    {ok, task()} | {error, term()}.
revoke_lease(Store, Task, RecordVer, Opts) ->
    synod_opts:call(?TASKS, revoke_lease, [Store, Task, RecordVer, synod_opts:keyword(Opts)]).

%% -- reading ------------------------------------------------------------------

%% @equiv task(Store, Id, [])
-spec task(synod_store:store(), binary()) -> {ok, task()} | {error, term()}.
task(Store, Id) ->
    task(Store, Id, []).

%% @doc The task as it is now (linearizable), or `{error, no_task_found}'.
-spec task(synod_store:store(), binary(), synod:options()) -> {ok, task()} | {error, term()}.
task(Store, Id, Opts) ->
    synod_opts:call(?TASKS, task, [Store, Id, synod_opts:keyword(Opts)]).

%% @equiv tasks(Store, GroupId, [])
-spec tasks(synod_store:store(), binary()) -> {ok, [task()]} | {error, term()}.
tasks(Store, GroupId) ->
    tasks(Store, GroupId, []).

%% @doc Every task of a group, in id order.
-spec tasks(synod_store:store(), binary(), synod:options()) -> {ok, [task()]} | {error, term()}.
tasks(Store, GroupId, Opts) ->
    synod_opts:call(?TASKS, tasks, [Store, GroupId, synod_opts:keyword(Opts)]).

%% @equiv list_tasks(Store, #{}, undefined, [])
-spec list_tasks(synod_store:store()) -> {ok, [task()], cursor()} | {error, term()}.
list_tasks(Store) ->
    list_tasks(Store, #{}, undefined, []).

%% @equiv list_tasks(Store, Filters, undefined, [])
-spec list_tasks(synod_store:store(), map() | list()) -> {ok, [task()], cursor()} | {error, term()}.
list_tasks(Store, Filters) ->
    list_tasks(Store, Filters, undefined, []).

%% @equiv list_tasks(Store, Filters, Cursor, [])
-spec list_tasks(synod_store:store(), map() | list(), cursor()) ->
    {ok, [task()], cursor()} | {error, term()}.
list_tasks(Store, Filters, Cursor) ->
    list_tasks(Store, Filters, Cursor, []).

%% @doc One page of the tasks that match `Filters' (`from', `to', `topic',
%% `sub_topic', `status'), in id order, and the cursor of the next page.
-spec list_tasks(synod_store:store(), map() | list(), cursor(), synod:options()) ->
    {ok, [task()], cursor()} | {error, term()}.
list_tasks(Store, Filters, Cursor, Opts) ->
    page(synod_opts:call(?TASKS, list_tasks,
                         [Store, Filters, synod_opts:nil(Cursor), synod_opts:keyword(Opts)])).

%% @equiv list_leased_tasks(Store, Topic, undefined, [])
-spec list_leased_tasks(synod_store:store(), binary()) ->
    {ok, [task()], cursor()} | {error, term()}.
list_leased_tasks(Store, Topic) ->
    list_leased_tasks(Store, Topic, undefined, []).

%% @equiv list_leased_tasks(Store, Topic, Cursor, [])
-spec list_leased_tasks(synod_store:store(), binary(), cursor()) ->
    {ok, [task()], cursor()} | {error, term()}.
list_leased_tasks(Store, Topic, Cursor) ->
    list_leased_tasks(Store, Topic, Cursor, []).

%% @doc One page of the running and snoozed tasks of `Topic', in reservation
%% order, and the cursor of the next page.
-spec list_leased_tasks(synod_store:store(), binary(), cursor(), synod:options()) ->
    {ok, [task()], cursor()} | {error, term()}.
list_leased_tasks(Store, Topic, Cursor, Opts) ->
    page(synod_opts:call(?TASKS, list_leased_tasks,
                         [Store, Topic, synod_opts:nil(Cursor), synod_opts:keyword(Opts)])).

%% -- the worker ---------------------------------------------------------------

%% @doc A child spec for a worker that reserves the tasks of one topic, one at
%% a time, runs `fun' on each (a 1-arity fun, or `{M, F, A}' called as
%% `M:F(Task, A...)'), keeps the lease alive meanwhile and ends the task from
%% the result: `ok' or `{ok, _}' terminates, `{snooze, Ms}' snoozes,
%% `{error, Reason}' fails. Options: `store', `topic', `fun' (required),
%% `ttl', `call_timeout', `name', `id' (to run several in one supervisor).
-spec worker_child_spec(synod:options()) -> supervisor:child_spec().
worker_child_spec(Opts) ->
    synod_opts:call(?WORKER, child_spec, [synod_opts:keyword(Opts)]).

%% @doc Starts a worker linked to the caller (options of `worker_child_spec/1').
-spec start_worker_link(synod:options()) -> {ok, pid()} | {error, term()}.
start_worker_link(Opts) ->
    synod_opts:call(?WORKER, start_link, [synod_opts:keyword(Opts)]).

%% @doc The task a worker runs now, or `undefined'.
-spec current_task(pid() | atom()) -> task() | undefined.
current_task(Worker) ->
    synod_opts:undefined(?WORKER:current(Worker)).

%% -- conversions --------------------------------------------------------------

page({ok, Tasks, Cursor}) -> {ok, Tasks, synod_opts:undefined(Cursor)};
page(Error) -> Error.
