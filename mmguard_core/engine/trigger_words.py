"""Candidate words for the text trigger.

Whole words (not sub-word pieces) so a trigger found on one tokenizer is still one
short, natural-looking insertion under any other; neutral in meaning so it does
not change what the question asks. The search scores a sample of these with the
surrogate ensemble's loss.
"""

CANDIDATE_WORDS: list[str] = """
pent quill zephyr amber cobalt fable harbor lumen mosaic nectar orbit prism quartz raven saffron
tundra umber velvet willow yonder zenith alder basil cedar dune ember fjord garnet heron iris
juniper kestrel lagoon maple nimbus onyx pebble quarry ripple sable thistle umbra vesper wren
yarrow zinnia acorn bramble cinder delta echo fern glade hollow indigo jasper kelp lichen
meadow nova opal plume quest reed summit tide vale wisp yew azure birch coral drift elm flint
grove hazel isle jade knoll lotus marsh north ochre pine quiet ridge spruce thorn upland vine
wharf aspen briar clover dawn estuary frost glen heath inlet jetty kiln ledge moor nook oasis
pier quay rune shoal tarn vapor weald arbor beacon canyon dell eddy fallow gorge hamlet ivy
kindle loch mesa notch outpost prairie rill sierra trellis vista whisk atlas bastion citadel
dome enclave forge gable haven keel lantern mantle nexus obelisk portal relic spire tower
vault anchor banner compass dial emblem falcon gazelle ibis jackal koala lynx marten newt
osprey puffin quail robin stork tern viper walrus yak badger condor dingo egret ferret gecko
hyena iguana llama moose narwhal ocelot panda salmon tapir urchin vole weasel zebu
""".split()

# Shared-vocabulary triggers (trigger_vocabulary="shared") combine a few of these: everyday filler
# words that any ordinary-English vocabulary keeps and that do not change what a question asks, so
# neither a rare-word nor an out-of-vocabulary stripper removes them (every one is in the zoo's
# common_words.txt, so the zoo models know them).
SHARED_WORDS: list[str] = """
just also well still again so then here together almost very too only such
""".split()
