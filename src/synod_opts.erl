%% @private
%% synod_opts: what every Erlang face module of Synod shares. It converts
%% arguments and results between Erlang's and Elixir's conventions and decides
%% nothing: options (a map or a proplist) become the keyword list the Elixir
%% module validates, Elixir's ArgumentError becomes error({badarg, Message}) as
%% synod_ring raises it, and Elixir's nil for "nothing" becomes undefined.
-module(synod_opts).

-export([keyword/1, keyword/2, member_keyword/1, call/3, undefined/1, nil/1]).

%% @doc A map or a proplist as a keyword list; a bare atom `A' in a proplist
%% stands for `{A, true}'. Anything else raises `{badarg, Message}'. A
%% malformed entry of a list stays, for the Elixir side to name.
-spec keyword(map() | proplists:proplist()) -> list().
keyword(Opts) when is_map(Opts) ->
    lists:sort(maps:to_list(Opts));
keyword(Opts) when is_list(Opts) ->
    proplists:unfold(Opts);
keyword(Opts) ->
    Message = io_lib:format("options must be a map or a proplist, got: ~0tp", [Opts]),
    error({badarg, iolist_to_binary(Message)}).

%% @doc As `keyword/1', and the values of the options named in `Nested',
%% which are options too, likewise.
-spec keyword(map() | proplists:proplist(), [atom()]) -> list().
keyword(Opts, Nested) ->
    [case Opt of
         {Key, Value} -> {Key, nested(lists:member(Key, Nested), Value)};
         Other -> Other
     end || Opt <- keyword(Opts)].

nested(true, Value) -> keyword(Value);
nested(false, Value) -> Value.

%% @doc The options of a Raft or store member as a keyword list (with the
%% store's own options nested under `store'), and `data_dir' as the binary
%% Elixir takes where Erlang gives a string.
-spec member_keyword(map() | proplists:proplist()) -> list().
member_keyword(Opts) ->
    [case Opt of
         {data_dir, Dir} when is_list(Dir) -> {data_dir, unicode:characters_to_binary(Dir)};
         Opt -> Opt
     end || Opt <- keyword(Opts, [store])].

%% @doc Calls the Elixir function `Module:Function(Args...)', raising
%% `{badarg, Message}' where it raises `ArgumentError'.
-spec call(module(), atom(), [term()]) -> term().
call(Module, Function, Args) ->
    try
        apply(Module, Function, Args)
    catch
        error:#{'__struct__' := 'Elixir.ArgumentError', message := Message}:Stacktrace ->
            erlang:raise(error, {badarg, Message}, Stacktrace)
    end.

%% @doc Elixir's `nil' (no value) as Erlang's `undefined'.
-spec undefined(term()) -> term().
undefined(nil) -> undefined;
undefined(Value) -> Value.

%% @doc Erlang's `undefined' (no value) as Elixir's `nil'.
-spec nil(term()) -> term().
nil(undefined) -> nil;
nil(Value) -> Value.
