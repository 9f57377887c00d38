%% @doc A consistent hash ring, for Erlang callers.
%%
%% This is the same ring as Elixir's `Synod.Ring' (which calls this module),
%% computed by the pure C core in c_src/ring.c through a NIF. A ring is an
%% immutable value: pass it between processes, store it in ETS or
%% persistent_term, and look keys up concurrently without locks.
%%
%% ```
%% Ring = synod_ring:new(['a@127.0.0.1', 'b@127.0.0.1', {'c@127.0.0.1', 2}]),
%% Owner = synod_ring:lookup(Ring, <<"user:42">>),
%% [Primary, Replica] = synod_ring:owners(Ring, <<"user:42">>, 2).
%% '''
%%
%% Members are atoms or binaries, optionally with an integer weight
%% (`{Member, Weight}', weight 1..1024, default 1). Keys are binaries or
%% atoms; an atom is hashed as its UTF-8 name, so `foo' and `<<"foo">>' land
%% on the same owner. Bad arguments raise `error({badarg, Message})' where
%% Message is a binary naming the problem. See docs/ring.md.
-module(synod_ring).

-export([new/1, new/2, lookup/2, owners/3, lookup_many/2, diff/3,
         members/1, info/1, add_member/2, add_member/3, remove_member/2,
         default_seed/0, default_vnodes/0]).

-export_type([ring/0, member/0, key/0, option/0]).

-opaque ring() :: reference().
-type member() :: atom() | binary().
-type key() :: atom() | binary().
-type option() :: {vnodes, 1..16384} | {seed, <<_:128>>}.

-define(DEFAULT_SEED, <<"synod-ring-v1.00">>).
-define(DEFAULT_VNODES, 2048).

%% @doc The default 16-byte ring seed, `<<"synod-ring-v1.00">>'.
-spec default_seed() -> <<_:128>>.
default_seed() -> ?DEFAULT_SEED.

%% @doc Points per unit of weight when no `vnodes' option is given.
-spec default_vnodes() -> pos_integer().
default_vnodes() -> ?DEFAULT_VNODES.

%% @equiv new(Members, [])
-spec new([member() | {member(), pos_integer()}]) -> ring().
new(Members) -> new(Members, []).

%% @doc Builds a ring. Options (a proplist or a map): `vnodes' (points per
%% unit of weight, default 2048) and `seed' (a 16-byte binary, default
%% `default_seed()'). Unknown options raise badarg.
-spec new([member() | {member(), pos_integer()}], [option()] | #{atom() => term()}) -> ring().
new(Members, Opts) when is_map(Opts) -> new(Members, maps:to_list(Opts));
new(Members, Opts) when is_list(Opts) ->
    {Vnodes, Seed} = options(Opts, ?DEFAULT_VNODES, ?DEFAULT_SEED),
    synod_nif:ring_new(Members, Vnodes, Seed);
new(_Members, _Opts) ->
    badarg(<<"options must be a list or a map">>).

options([], Vnodes, Seed) -> {Vnodes, Seed};
options([{vnodes, V} | Rest], _, Seed) when is_integer(V), V >= 1, V =< 16384 ->
    options(Rest, V, Seed);
options([{vnodes, _} | _], _, _) ->
    badarg(<<"option vnodes must be an integer in 1..16384">>);
options([{seed, S} | Rest], Vnodes, _) when is_binary(S), byte_size(S) =:= 16 ->
    options(Rest, Vnodes, S);
options([{seed, _} | _], _, _) ->
    badarg(<<"option seed must be a 16-byte binary">>);
options([Other | _], _, _) ->
    badarg(iolist_to_binary(io_lib:format("unknown option: ~0p", [Other]))).

%% @doc The member that owns Key.
-spec lookup(ring(), key()) -> member().
lookup(Ring, Key) -> synod_nif:ring_lookup(Ring, Key).

%% @doc The first N distinct members clockwise from Key, owner first. N larger
%% than the member count gives every member.
-spec owners(ring(), key(), pos_integer()) -> [member()].
owners(Ring, Key, N) -> synod_nif:ring_owners(Ring, Key, N).

%% @doc Owners of many keys, in the order of Keys. Yields to the scheduler, so
%% any number of keys is safe to place in one call.
-spec lookup_many(ring(), [key()]) -> [member()].
lookup_many(Ring, Keys) -> lists:reverse(synod_nif:ring_lookup_many(Ring, Keys, [])).

%% @doc The keys whose owner differs between Old and New, as
%% `{Key, OldOwner, NewOwner}', in the order of Keys. Yields like lookup_many.
-spec diff(ring(), ring(), [key()]) -> [{key(), member(), member()}].
diff(Old, New, Keys) -> lists:reverse(synod_nif:ring_diff(Old, New, Keys, [])).

%% @doc Members with their weights, in the ring's canonical (bytewise) order.
-spec members(ring()) -> [{member(), pos_integer()}].
members(Ring) -> maps:get(members, info(Ring)).

%% @doc Members, vnodes, seed and the number of points.
-spec info(ring()) -> #{members := [{member(), pos_integer()}], vnodes := pos_integer(),
                        seed := <<_:128>>, points := pos_integer()}.
info(Ring) -> synod_nif:ring_info(Ring).

%% @equiv add_member(Ring, Member, 1)
-spec add_member(ring(), member()) -> ring().
add_member(Ring, Member) -> add_member(Ring, Member, 1).

%% @doc A new ring with Member added (same vnodes and seed). Raises badarg if
%% Member is already in the ring.
-spec add_member(ring(), member(), pos_integer()) -> ring().
add_member(Ring, Member, Weight) ->
    #{members := Members, vnodes := Vnodes, seed := Seed} = info(Ring),
    synod_nif:ring_new([{Member, Weight} | Members], Vnodes, Seed).

%% @doc A new ring without Member. Raises badarg if Member is not in the ring
%% or is its last member.
-spec remove_member(ring(), member()) -> ring().
remove_member(Ring, Member) ->
    #{members := Members, vnodes := Vnodes, seed := Seed} = info(Ring),
    Name = name(Member),
    case lists:partition(fun({M, _}) -> name(M) =:= Name end, Members) of
        {[], _} ->
            badarg(iolist_to_binary(io_lib:format("not a member: ~0p", [Member])));
        {_, []} ->
            badarg(<<"cannot remove the last member">>);
        {_, Rest} ->
            synod_nif:ring_new(Rest, Vnodes, Seed)
    end.

name(A) when is_atom(A) -> atom_to_binary(A, utf8);
name(B) when is_binary(B) -> B;
name(_) -> badarg(<<"a member name must be an atom or a binary">>).

badarg(Message) -> erlang:error({badarg, Message}).
