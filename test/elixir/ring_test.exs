defmodule Synod.RingTest do
  use ExUnit.Case, async: true
  doctest Synod.Ring

  alias Synod.Ring

  @vectors Path.expand("../vectors/ring.txt", __DIR__)

  # Parses test/vectors/ring.txt (written by scripts/gen_ring_vectors.py, an
  # independent implementation) into [%{members, vnodes, seed, keys}].
  defp vector_rings do
    @vectors
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.reject(&String.starts_with?(&1, "#"))
    |> Enum.reduce([], fn line, acc ->
      case {String.split(line, " "), acc} do
        {["ring", vnodes, seed], _} ->
          [%{vnodes: String.to_integer(vnodes), seed: unhex(seed), members: [], keys: []} | acc]

        {["member", name, weight], [ring | rest]} ->
          [%{ring | members: ring.members ++ [{unhex(name), String.to_integer(weight)}]} | rest]

        {["key", key, owner, prefs], [ring | rest]} ->
          prefs = prefs |> String.split(",") |> Enum.map(&unhex/1)
          [%{ring | keys: [{unhex(key), unhex(owner), prefs} | ring.keys]} | rest]

        {["end"], _} ->
          acc
      end
    end)
    |> Enum.reverse()
  end

  defp unhex("-"), do: ""
  defp unhex(hex), do: Base.decode16!(hex, case: :lower)

  describe "shared test vectors" do
    test "owners and preference lists match the independent implementation" do
      rings = vector_rings()
      assert length(rings) == 6

      for %{members: members, vnodes: vnodes, seed: seed, keys: keys} <- rings do
        for order <- [members, Enum.reverse(members)] do
          ring = Ring.new(order, vnodes: vnodes, seed: seed)

          assert Ring.lookup_many(ring, Enum.map(keys, &elem(&1, 0))) ==
                   Enum.map(keys, &elem(&1, 1))

          for {key, owner, prefs} <- keys do
            assert Ring.lookup(ring, key) == owner

            for n <- 1..(length(prefs) + 1) do
              assert Ring.owners(ring, key, n) == Enum.take(prefs, n)
            end
          end
        end
      end
    end

    test "atoms are hashed as their UTF-8 names" do
      [%{members: members, vnodes: vnodes, seed: seed, keys: keys} | _] = vector_rings()

      atom_ring =
        Ring.new(Enum.map(members, fn {n, w} -> {String.to_atom(n), w} end),
          vnodes: vnodes,
          seed: seed
        )

      for {key, owner, _} <- keys, String.valid?(key), byte_size(key) < 200 do
        assert Ring.lookup(atom_ring, String.to_atom(key)) == String.to_atom(owner)
      end
    end
  end

  describe "building" do
    test "returns members in canonical order with weights, and the settings" do
      ring = Ring.new([{"b", 2}, :a, "c"], vnodes: 10)
      assert %{members: [{:a, 1}, {"b", 2}, {"c", 1}], vnodes: 10, points: 40} = Ring.info(ring)
      assert Ring.info(ring).seed == :synod_ring.default_seed()
      assert Ring.members(ring) == [{:a, 1}, {"b", 2}, {"c", 1}]
    end

    test "bad input raises ArgumentError naming the problem" do
      cases = [
        {fn -> Ring.new([]) end, "the member list is empty"},
        {fn -> Ring.new([:a, {"b", 0}]) end, "a weight must be an integer in 1..1024"},
        {fn -> Ring.new([{:a, -1}]) end, "a weight must be an integer in 1..1024"},
        {fn -> Ring.new([{:a, 1.5}]) end, "a weight must be an integer in 1..1024"},
        {fn -> Ring.new([:a, :b, "a"]) end, "duplicate member: <<\"a\">>"},
        {fn -> Ring.new([1]) end, "a member name must be an atom or a binary"},
        {fn -> Ring.new([""]) end, "a member name must be 1..255 bytes"},
        {fn -> Ring.new([{:a, 1, 2}]) end, "a member must be a name or a {name, weight} tuple"},
        {fn -> Ring.new(:a) end, "members must be a proper list"},
        {fn -> Ring.new([:a], vnodes: 0) end, "option vnodes must be an integer in 1..16384"},
        {fn -> Ring.new([:a], seed: "short") end, "option seed must be a 16-byte binary"},
        {fn -> Ring.new([:a], colour: :red) end, "unknown option: {colour,red}"},
        {fn -> Ring.new([:a], [:oops]) end, "options must be a keyword list"},
        {fn -> Ring.new([{:a, 1024}], vnodes: 16384) end, "too many points"}
      ]

      for {fun, message} <- cases do
        error = assert_raise ArgumentError, fun
        assert error.message =~ message
      end
    end

    test "lookups reject bad keys, bad n and non-rings" do
      ring = Ring.new([:a, :b])

      assert_raise ArgumentError, "a key must be a binary or an atom", fn ->
        Ring.lookup(ring, 42)
      end

      assert_raise ArgumentError, "a key must be a binary or an atom", fn ->
        Ring.owners(ring, {:k}, 1)
      end

      assert_raise ArgumentError, "n must be a positive integer", fn ->
        Ring.owners(ring, "k", 0)
      end

      assert_raise ArgumentError, "n must be a positive integer", fn ->
        Ring.owners(ring, "k", -3)
      end

      for bad_n <- [-(2 ** 70), 2.0, :all] do
        assert_raise ArgumentError, "n must be a positive integer", fn ->
          Ring.owners(ring, "k", bad_n)
        end
      end

      # any positive n, however large, means every member
      assert length(Ring.owners(ring, "k", 2 ** 40)) == 2
      assert length(Ring.owners(ring, "k", 2 ** 70)) == 2

      assert_raise ArgumentError, "not a ring", fn -> Ring.lookup(make_ref(), "k") end
      assert_raise ArgumentError, "not a ring", fn -> Ring.lookup(:ring, "k") end

      assert_raise ArgumentError, "a key must be a binary or an atom", fn ->
        Ring.lookup_many(ring, ["a", 1])
      end

      assert_raise ArgumentError, "keys must be a proper list", fn ->
        Ring.lookup_many(ring, ["a" | "b"])
      end

      assert_raise ArgumentError, "keys must be a list", fn -> Ring.diff(ring, ring, :keys) end
    end
  end

  describe "membership changes" do
    setup do
      members = for i <- 1..8, do: :"node#{i}@127.0.0.1"
      keys = for i <- 1..20_000, do: "key-#{i}"
      %{ring: Ring.new(members, vnodes: 256), keys: keys}
    end

    test "adding a member moves keys only onto it, about 1/n of them", %{ring: ring, keys: keys} do
      bigger = Ring.add_member(ring, :"node9@127.0.0.1")
      moved = Ring.diff(ring, bigger, keys)
      assert Enum.all?(moved, fn {_key, _old, new} -> new == :"node9@127.0.0.1" end)
      assert length(moved) > 20_000 / 9 * 0.8 and length(moved) < 20_000 / 9 * 1.2

      assert Enum.map(moved, &elem(&1, 0)) ==
               Enum.filter(keys, &(Ring.lookup(bigger, &1) != Ring.lookup(ring, &1)))
    end

    test "removing a member moves only its keys", %{ring: ring, keys: keys} do
      smaller = Ring.remove_member(ring, :"node3@127.0.0.1")
      moved = Ring.diff(ring, smaller, keys)
      assert moved != []
      assert Enum.all?(moved, fn {_key, old, _new} -> old == :"node3@127.0.0.1" end)
      owned_before = Enum.count(keys, &(Ring.lookup(ring, &1) == :"node3@127.0.0.1"))
      assert length(moved) == owned_before
    end

    test "a removed-then-added member gets exactly its keys back", %{ring: ring, keys: keys} do
      again =
        ring |> Ring.remove_member(:"node5@127.0.0.1") |> Ring.add_member(:"node5@127.0.0.1")

      assert Ring.diff(ring, again, keys) == []
    end

    test "weights skew the share of keys", %{keys: keys} do
      ring = Ring.new([{:light, 1}, {:heavy, 3}], vnodes: 512)
      heavy = Enum.count(Ring.lookup_many(ring, keys), &(&1 == :heavy)) / length(keys)
      assert heavy > 0.70 and heavy < 0.80
    end

    test "remove_member refuses absent and last members", %{ring: ring} do
      assert_raise ArgumentError, ~r/not a member/, fn -> Ring.remove_member(ring, :nobody) end

      assert_raise ArgumentError, ~r/last member/, fn ->
        Ring.remove_member(Ring.new([:x]), :x)
      end

      assert_raise ArgumentError, ~r/duplicate member/, fn ->
        Ring.add_member(ring, :"node1@127.0.0.1")
      end
    end
  end

  test "a ring is shared by many processes without copying or locks" do
    ring = Ring.new(for(i <- 1..16, do: :"n#{i}"), vnodes: 64)
    keys = for i <- 1..2_000, do: <<i::128>>
    expected = Ring.lookup_many(ring, keys)

    results =
      1..8
      |> Enum.map(fn _ -> Task.async(fn -> Enum.map(keys, &Ring.lookup(ring, &1)) end) end)
      |> Task.await_many()

    assert Enum.all?(results, &(&1 == expected))
  end

  test "bulk placement of 100k keys yields and returns every owner in order" do
    ring = Ring.new(for(i <- 1..16, do: :"n#{i}"))
    keys = for i <- 1..100_000, do: <<i::128>>
    owners = Ring.lookup_many(ring, keys)
    assert length(owners) == 100_000
    assert Enum.at(owners, 0) == Ring.lookup(ring, hd(keys))
    assert Enum.at(owners, 99_999) == Ring.lookup(ring, List.last(keys))
    assert Enum.at(owners, 54_321) == Ring.lookup(ring, Enum.at(keys, 54_321))
  end
end
