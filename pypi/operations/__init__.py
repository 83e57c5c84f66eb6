"""Operations on a whole index: fsck, copying objects between stores, removal, the purge worker."""
