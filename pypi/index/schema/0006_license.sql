-- Metadata 2.4 (PEP 639) and PEP 643: License-Expression, License-File, Dynamic.
ALTER TABLE releases ADD COLUMN license_expression TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN license_files TEXT NOT NULL DEFAULT '[]';
ALTER TABLE releases ADD COLUMN dynamic TEXT NOT NULL DEFAULT '[]';
