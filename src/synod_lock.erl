%% @doc Locks in a Synod store from Erlang: fencing tokens, FIFO waiting,
%% release when the holder dies.
%%
%% Thin: every function converts its arguments and calls `Synod.Lock'
%% (`'Elixir.Synod.Lock''), which decides everything; see its documentation
%% and docs/coordination.md. Options (a map or a proplist): `ttl' (the lease
%% that keeps the lock, ms), `timeout' (how long to wait for the lock in
%% total, ms or `infinity'), `call_timeout' (each store round trip, ms).
%%
%% ```
%% {ok, done} = synod_lock:lock(cfg, <<"jobs/nightly">>,
%%                              fun(Token) -> fence(Token), done end, #{ttl => 5000}),
%% {ok, Token, done} = synod_lock:try_lock(cfg, <<"jobs/nightly">>, fun() -> done end),
%% {error, locked} = synod_lock:try_lock(cfg, <<"jobs/nightly">>, ...)   % while held
%% '''
-module(synod_lock).

-export([lock/3, lock/4, try_lock/3, try_lock/4]).

-export_type([token/0, lock_fun/0]).

-define(LOCK, 'Elixir.Synod.Lock').

%% Grows with every grant of a lock: pass it to what the lock protects.
-type token() :: pos_integer().
-type lock_fun() :: fun(() -> term()) | fun((token()) -> term()).

%% @equiv lock(Store, Key, Fun, [])
-spec lock(synod_store:store(), binary(), lock_fun()) -> {ok, term()} | {error, term()}.
lock(Store, Key, Fun) ->
    lock(Store, Key, Fun, []).

%% @doc Waits for the lock `Key', runs `Fun' (with no argument or the fencing
%% token) while holding it, and releases it. `{ok, Result}' means no other
%% contender held the lock while `Fun' ran; `{error, {lock_lost, Result}}'
%% that the lease was lost meanwhile (or the release could not confirm it
%% was not); other errors: `timeout', `lease_expired',
%% `{unknown_store, Store}'. A `Fun' that raises releases the lock and
%% re-raises.
-spec lock(synod_store:store(), binary(), lock_fun(), synod:options()) ->
    {ok, term()} | {error, term()}.
lock(Store, Key, Fun, Opts) ->
    synod_opts:call(?LOCK, lock, [Store, Key, Fun, synod_opts:keyword(Opts)]).

%% @equiv try_lock(Store, Key, Fun, [])
-spec try_lock(synod_store:store(), binary(), lock_fun()) ->
    {ok, token(), term()} | {error, term()}.
try_lock(Store, Key, Fun) ->
    try_lock(Store, Key, Fun, []).

%% @doc Takes the lock only if it is free now: runs `Fun' and returns
%% `{ok, Token, Result}', or `{error, locked}' at once.
-spec try_lock(synod_store:store(), binary(), lock_fun(), synod:options()) ->
    {ok, token(), term()} | {error, term()}.
try_lock(Store, Key, Fun, Opts) ->
    synod_opts:call(?LOCK, try_lock, [Store, Key, Fun, synod_opts:keyword(Opts)]).
