%% @doc Values in a Synod store from Erlang: read a key or the children of a
%% prefix, and change a key atomically with a function (compare-and-swap on
%% its revision).
%%
%% Thin: every function converts its arguments and calls `Synod.Values'
%% (`'Elixir.Synod.Values''); see its documentation. Values are any terms
%% (stored in the external term format; `{codec, binary}' stores binaries as
%% they are). An absent key's value is `undefined' here. Options (a map or a
%% proplist): `codec', `timeout' (in total, ms), `call_timeout' (each store
%% round trip, ms).
%%
%% ```
%% {ok, 1} = synod_values:transform(cfg, <<"counter">>,
%%                                  fun(undefined) -> 1; (N) -> N + 1 end),
%% {ok, #{<<"counter">> := 1}} = synod_values:get_values(cfg, <<"counter">>),
%% {ok, 2} = synod_values:try_transform(cfg, <<"counter">>, fun(N) -> N + 1 end).
%% '''
-module(synod_values).

-export([get_values/2, get_values/3, transform/3, transform/4, try_transform/3,
         try_transform/4]).

-define(VALUES, 'Elixir.Synod.Values').

%% @equiv get_values(Store, Key, [])
-spec get_values(synod_store:store(), binary()) -> {ok, #{binary() => term()}} | {error, term()}.
get_values(Store, Key) ->
    get_values(Store, Key, []).

%% @doc The value under `Key' as `{ok, #{Key => Value}}' (an empty map when
%% absent); a key ending in `/' gives the values of its direct children.
-spec get_values(synod_store:store(), binary(), synod:options()) ->
    {ok, #{binary() => term()}} | {error, term()}.
get_values(Store, Key, Opts) ->
    synod_opts:call(?VALUES, get_values, [Store, Key, synod_opts:keyword(Opts)]).

%% @equiv transform(Store, Key, Fun, [])
-spec transform(synod_store:store(), binary(), fun((term()) -> term())) ->
    {ok, term()} | {error, term()}.
transform(Store, Key, Fun) ->
    transform(Store, Key, Fun, []).

%% @doc Sets `Key' to `Fun(Current)' atomically, retrying on conflict (so
%% `Fun' may run more than once): `{ok, New}' or `{error, Reason}'
%% (`timeout': the outcome is unknown).
-spec transform(synod_store:store(), binary(), fun((term()) -> term()), synod:options()) ->
    {ok, term()} | {error, term()}.
transform(Store, Key, Fun, Opts) ->
    synod_opts:call(?VALUES, transform, [Store, Key, current(Fun), synod_opts:keyword(Opts)]).

%% @equiv try_transform(Store, Key, Fun, [])
-spec try_transform(synod_store:store(), binary(), fun((term()) -> term())) ->
    {ok, term()} | {conflict, term()} | {error, term()}.
try_transform(Store, Key, Fun) ->
    try_transform(Store, Key, Fun, []).

%% @doc Sets `Key' to `Fun(Current)' if nobody changed it between the read
%% and the write; `Fun' runs once. `{ok, New}', `{conflict, Winner}'
%% (`undefined' if the key was deleted) or `{error, Reason}'.
-spec try_transform(synod_store:store(), binary(), fun((term()) -> term()), synod:options()) ->
    {ok, term()} | {conflict, term()} | {error, term()}.
try_transform(Store, Key, Fun, Opts) ->
    case synod_opts:call(?VALUES, try_transform,
                         [Store, Key, current(Fun), synod_opts:keyword(Opts)]) of
        {conflict, Winner} -> {conflict, synod_opts:undefined(Winner)};
        Other -> Other
    end.

%% `Fun' sees an absent key's value as undefined.
current(Fun) when is_function(Fun, 1) ->
    fun(Current) -> Fun(synod_opts:undefined(Current)) end;
current(Fun) ->
    Fun.
