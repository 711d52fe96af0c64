# DIAGNOSTIC wrapper (not upstream behaviour): 1 torch thread, and re-initialise
# GSASRec's item/position/output embeddings with xavier_uniform_ (as sasrec-rs does)
# instead of nn.Embedding's default N(0,1). Everything else is their code unchanged.
import sys, runpy, torch
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
sys.path.insert(0, ".")
import gsasrec
_orig_init = gsasrec.GSASRec.__init__
def _init(self, *a, **kw):
    _orig_init(self, *a, **kw)
    torch.nn.init.xavier_uniform_(self.item_embedding.weight)
    torch.nn.init.xavier_uniform_(self.position_embedding.weight)
    if not self.reuse_item_embeddings:
        torch.nn.init.xavier_uniform_(self.output_embedding.weight)
gsasrec.GSASRec.__init__ = _init
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
