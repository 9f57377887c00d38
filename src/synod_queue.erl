%% @doc FIFO queues on a Synod store from Erlang: strictly in revision order,
%% each value to exactly one consumer; plain (at most once) or acknowledged
%% (at least once) mode.
%%
%% Thin: every function converts its arguments and calls `Synod.Queue'
%% (`'Elixir.Synod.Queue''); see its documentation and docs/coordination.md.
%% The store comes first, then the queue's name (a binary); values are any
%% terms. Options (a map or a proplist): `timeout' (in total, ms),
%% `call_timeout' (each store round trip, ms), and `ttl' (enqueue) or
%% `visibility_timeout' (dequeue in acknowledged mode).
%%
%% ```
%% {ok, _Key, Rev} = synod_queue:enqueue(jobs, <<"mail">>, #{to => <<"a@b">>}),
%% {ok, #{value := #{to := <<"a@b">>}, revision := Rev}} =
%%     synod_queue:dequeue(jobs, <<"mail">>, #{timeout => 5000}),
%% {ok, #{receipt := Receipt}} = synod_queue:dequeue(jobs, <<"mail">>, #{visibility_timeout => 30000}),
%% ok = synod_queue:ack(jobs, <<"mail">>, Receipt).
%% '''
-module(synod_queue).

-export([enqueue/3, enqueue/4, dequeue/2, dequeue/3, ack/3, ack/4, count/2, count/3]).

-define(QUEUE, 'Elixir.Synod.Queue').

%% @equiv enqueue(Store, Name, Value, [])
-spec enqueue(synod_store:store(), binary(), term()) ->
    {ok, binary(), pos_integer()} | {error, term()}.
enqueue(Store, Name, Value) ->
    enqueue(Store, Name, Value, []).

%% @doc Appends `Value' to the queue: `{ok, Key, Revision}' or `{error,
%% Reason}' (`{value_too_large, Bytes, Max}', `{unknown_store, Store}',
%% `timeout': outcome unknown).
-spec enqueue(synod_store:store(), binary(), term(), synod:options()) ->
    {ok, binary(), pos_integer()} | {error, term()}.
enqueue(Store, Name, Value, Opts) ->
    synod_opts:call(?QUEUE, enqueue, [Store, Name, Value, synod_opts:keyword(Opts)]).

%% @equiv dequeue(Store, Name, [])
-spec dequeue(synod_store:store(), binary()) -> {ok, map()} | {error, term()}.
dequeue(Store, Name) ->
    dequeue(Store, Name, []).

%% @doc Takes the oldest value, waiting up to `timeout' for one:
%% `{ok, #{key, value, revision, dequeue_revision, receipt}}' (`receipt' is
%% `nil' in plain mode) or `{error, empty}'.
-spec dequeue(synod_store:store(), binary(), synod:options()) -> {ok, map()} | {error, term()}.
dequeue(Store, Name, Opts) ->
    synod_opts:call(?QUEUE, dequeue, [Store, Name, synod_opts:keyword(Opts)]).

%% @equiv ack(Store, Name, Receipt, [])
-spec ack(synod_store:store(), binary(), term()) -> ok | {error, term()}.
ack(Store, Name, Receipt) ->
    ack(Store, Name, Receipt, []).

%% @doc Deletes a value taken in acknowledged mode, if its claim still holds.
-spec ack(synod_store:store(), binary(), term(), synod:options()) -> ok | {error, term()}.
ack(Store, Name, Receipt, Opts) ->
    synod_opts:call(?QUEUE, ack, [Store, Name, Receipt, synod_opts:keyword(Opts)]).

%% @equiv count(Store, Name, [])
-spec count(synod_store:store(), binary()) -> {ok, non_neg_integer()} | {error, term()}.
count(Store, Name) ->
    count(Store, Name, []).

%% @doc How many values the queue holds (claimed ones included).
-spec count(synod_store:store(), binary(), synod:options()) ->
    {ok, non_neg_integer()} | {error, term()}.
count(Store, Name, Opts) ->
    synod_opts:call(?QUEUE, count, [Store, Name, synod_opts:keyword(Opts)]).
