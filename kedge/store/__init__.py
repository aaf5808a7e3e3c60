"""kedge.store"""
